"""The assembler's cost is linear in the number of deltas (it once concatenated, which is quadratic
and ran on the event loop every stream of a worker shares), and an open answer holds about the size
of its text (it once held each delta as a str object of its own)."""

from __future__ import annotations

import time
import tracemalloc

from responses_app.assembler import OutputAssembler
from responses_app.providers.base import Finish, TextDelta, ToolCallDelta


def test_a_hundred_thousand_deltas_assemble_in_linear_time():
    assembler = OutputAssembler()
    started = time.process_time()
    for _ in range(100_000):
        assembler.feed(TextDelta("token "))
    for _ in range(20_000):
        assembler.feed(ToolCallDelta(0, "call_1", "f", '{"a": 1}'))
    assembler.feed(Finish("tool_calls"))
    assembler.finish()
    elapsed = time.process_time() - started
    # Linear: well under a second here. Concatenating would copy ~30 GB and take minutes.
    assert elapsed < 5, elapsed
    assert assembler.output[0]["content"][0]["text"] == "token " * 100_000
    assert assembler.output[1]["arguments"] == '{"a": 1}' * 20_000


def _fresh(index: int) -> str:
    """A delta as a provider's JSON decoder hands it over: a str object of its own."""
    return f"t{index % 10}k "


def test_an_open_answer_holds_about_its_texts_size_not_a_string_per_delta():
    assembler = OutputAssembler()
    assembler.feed(TextDelta(_fresh(0)))
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for index in range(1, 10_000):
            assembler.feed(TextDelta(_fresh(index)))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    text_size = 10_000 * 4
    # Each delta kept as its own str object held about 60 bytes per 4-character delta (600 KB).
    assert held - before < 2 * text_size, held - before
    assembler.feed(Finish("stop"))
    assembler.finish()
    assert assembler.output[0]["content"][0]["text"] == "".join(_fresh(index) for index in range(10_000))


def test_pieces_keep_their_order_across_blocks_when_an_answer_breaks_off():
    cut = OutputAssembler()
    for index in range(200):
        cut.feed(TextDelta(_fresh(index)))
    cut.abandon()
    assert cut.output[0]["status"] == "incomplete"
    assert cut.output[0]["content"][0]["text"] == "".join(_fresh(index) for index in range(200))

    assembler = OutputAssembler()
    for index in range(150):
        assembler.feed(TextDelta(_fresh(index)))
    for index in range(130):
        assembler.feed(ToolCallDelta(0, "call_1", "f", str(index)))
    assembler.abandon()
    message, call = assembler.output
    assert message["status"] == "completed"  # closed when the call began
    assert message["content"][0]["text"] == "".join(_fresh(index) for index in range(150))
    assert call["status"] == "incomplete"
    assert call["arguments"] == "".join(str(index) for index in range(130))
