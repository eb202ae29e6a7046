"""A fake Azure OpenAI resource: Chat Completions under `/openai/deployments/{deployment}/chat/completions
?api-version=...`, authenticated by an `api-key` header. The body format is OpenAI's, so the answers
come from `FakeOpenAI`; this only checks Azure's addressing and credentials on top."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import Recorded, Writer

_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/chat/completions\?api-version=(?P<version>[\w.-]+)$")


class FakeAzureOpenAI(FakeOpenAI):
    name = "azure"

    def handle(self, recorded: Recorded, step: Any, writer: Writer) -> None:
        match = _PATH.match(recorded.path)
        if match is None:
            writer.json(404, {"error": {"code": "404", "message": "Resource not found"}})
            return
        if not recorded.headers.get("api-key") or "authorization" in recorded.headers:
            writer.json(401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key."}})
            return
        super().handle(replace(recorded, path="/chat/completions"), step, writer)
