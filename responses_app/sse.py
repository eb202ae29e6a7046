"""Server-sent events in the form every Responses client parses: one frame per write,
`event: <type>` + one-line `data:` JSON + a blank line, LF only, `sequence_number` from 0,
and no `[DONE]` sentinel (responses-api.md §0.5-6)."""

from __future__ import annotations

from typing import Any

from gateway_project import fast_json


class SseEncoder:
    def __init__(self) -> None:
        self._sequence = 0

    def frame(self, event: dict[str, Any]) -> str:
        payload = {"type": event["type"], "sequence_number": self._sequence,
                   **{k: v for k, v in event.items() if k != "type"}}
        self._sequence += 1
        # JSON text never holds a raw newline, so the data stays on one line.
        return f"event: {event['type']}\ndata: {fast_json.dumps(payload)}\n\n"

    def skip_to(self, sequence: int) -> None:
        """Number the next frame `sequence` (a stream that continues another's numbering)."""
        self._sequence = sequence

    def comment(self, text: str) -> str:
        """A comment line: clients ignore it, proxies see traffic. No sequence number is used."""
        return f": {text}\n\n"
