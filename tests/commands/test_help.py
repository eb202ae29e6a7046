"""Every operator command answers --help with what it does and its flags."""

from __future__ import annotations

import pytest
from django.core.management import call_command

COMMANDS = {
    "purge_conversations": ["--older-than", "--dry-run", "--batch-size", "conversations.retention"],
    "check_config": ["--config", "redacted"],
    "check_providers": ["--timeout", "--provider", "--model", "--generate"],
    "export_conversations": ["--format", "--output", "--per", "--owner", "--since", "--until", "--model",
                             "--conversation"],
    "usage_report": ["--by", "--since", "--until", "--owner", "--key", "--format"],
    "chat": ["--url", "--api-key", "--model", "--conversation", "/model"],
}


@pytest.mark.parametrize(("command", "words"), COMMANDS.items())
def test_help(command: str, words: list[str], capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as done:
        call_command(command, "--help")
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in words:
        assert word in text, f"{command} --help does not mention {word}"
