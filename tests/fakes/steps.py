"""What a scripted fake upstream does for one request, shared by every wire format's fake.

`Pacing` (a base for each fake's `Reply`): a slow first byte, a pause between frames, and faults
after N frames: the body cut short (`drop_after`), a TCP reset (`reset_after`) or silence with the
connection held open (`stall_after`). `Fail` answers with an error status in the fake's own error
shape; `Raw` sends arbitrary bytes, for malformed answers; `Count` is what a token-count endpoint
answers. `cut_at_stop` is how a fake honours a request's stop sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.fakes.server import Writer


@dataclass
class Pacing:
    first_byte_delay: float = 0.0
    chunk_delay: float = 0.0
    drop_after: int | None = None
    reset_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 30.0


@dataclass
class Fail:
    status: int
    message: str = "upstream failure"
    # The provider's error type; empty means the fake's usual one for a server failure.
    type: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    first_byte_delay: float = 0.0


@dataclass
class Count:
    """The answer of an upstream's token-count endpoint (each fake has a default)."""

    input_tokens: int


@dataclass
class Raw:
    status: int
    body: bytes
    content_type: str = "application/json"
    stream: bool = False


def wait_first_byte(writer: Writer, step: object) -> bool:
    """Hold the answer back for the step's first_byte_delay; False when the client left meanwhile."""
    delay = getattr(step, "first_byte_delay", 0.0)
    return not (delay and writer.wait_for_disconnect(delay))


def write_raw(writer: Writer, step: Raw) -> None:
    if step.stream:
        writer.start_stream(step.status, step.content_type)
        writer.chunk(step.body)
        writer.end_stream()
    else:
        writer.json(step.status, step.body)


def write_frames(writer: Writer, frames: list[str], pacing: Pacing) -> None:
    """Stream `frames`, each one chunk, applying the pacing and the fault after N frames."""
    writer.start_stream()
    for index, frame in enumerate(frames):
        if pacing.drop_after is not None and index >= pacing.drop_after:
            writer.drop()
            return
        if pacing.reset_after is not None and index >= pacing.reset_after:
            writer.reset()
            return
        if pacing.stall_after is not None and index >= pacing.stall_after:
            writer.wait_for_disconnect(pacing.stall_seconds)
            return
        if not writer.chunk(frame):
            return
        if pacing.chunk_delay and index < len(frames) - 1 and writer.wait_for_disconnect(pacing.chunk_delay):
            return
    writer.end_stream()


def cut_at_stop(text: str, stops: Any) -> tuple[str, str | None]:
    """`text` up to the first of the stop sequences `stops` (a string or a list, as a request sends
    them) it contains, and the sequence that matched; the text itself and None when none does."""
    sequences = [stops] if isinstance(stops, str) else [s for s in stops or [] if isinstance(s, str)]
    found = [(text.find(s), s) for s in sequences if s and s in text]
    if not found:
        return text, None
    at, matched = min(found)
    return text[:at], matched
