"""Responses items -> Chat Completions messages, for the shapes real clients send."""

from __future__ import annotations

from typing import Any

from responses_app.providers.base import ProviderRequest
from responses_app.providers.openai_chat import build_payload, to_messages


def test_text_before_tool_calls_is_one_assistant_turn():
    items: list[dict[str, Any]] = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Do two things"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "On it.", "annotations": []}]},
        {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "b", "arguments": '{"x":1}'},
        {"type": "function_call_output", "call_id": "c1", "output": "A"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "B"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
    ]
    assert to_messages(None, items) == [
        {"role": "user", "content": "Do two things"},
        {"role": "assistant", "content": "On it.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "b", "arguments": '{"x":1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "A"},
        {"role": "tool", "tool_call_id": "c2", "content": "B"},
    ]


def test_files_and_data_url_images_reach_the_upstream():
    items = [{"type": "message", "role": "user", "content": [
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,BBBB", "filename": "a.pdf"},
    ]}]
    assert to_messages("sys", items) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "auto"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,BBBB", "filename": "a.pdf"}},
        ]},
    ]


def test_assistant_refusals_are_replayed_as_refusals():
    items = [{"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}]
    assert to_messages(None, items) == [{"role": "assistant", "content": None, "refusal": "No."}]


def test_json_object_format_and_no_tool_choice_without_tools():
    payload = build_payload(ProviderRequest(model="m", items=[], text_format={"type": "json_object"},
                                            tool_choice="auto"), stream=False)
    assert payload["response_format"] == {"type": "json_object"}
    assert "tool_choice" not in payload and "tools" not in payload
