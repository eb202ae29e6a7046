"""Timing and faults shared by the streaming fakes: a slow first byte, a pause between frames,
a connection reset or a silent stall after N frames."""

from __future__ import annotations

from dataclasses import dataclass

from tests.fakes.server import Writer


@dataclass
class Pacing:
    first_byte_delay: float = 0.0
    chunk_delay: float = 0.0
    # Cut the connection (a reset) after N frames, or go silent after N frames holding it open.
    drop_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 30.0


def wait_first_byte(writer: Writer, step: object) -> bool:
    """Hold the answer back for the step's first_byte_delay; False when the client left meanwhile."""
    delay = getattr(step, "first_byte_delay", 0.0)
    return not (delay and writer.wait_for_disconnect(delay))


def write_frames(writer: Writer, frames: list[str], pacing: Pacing) -> None:
    writer.start_stream()
    for index, frame in enumerate(frames):
        if pacing.drop_after is not None and index >= pacing.drop_after:
            writer.drop()
            return
        if pacing.stall_after is not None and index >= pacing.stall_after:
            writer.wait_for_disconnect(pacing.stall_seconds)
            return
        if not writer.chunk(frame):
            return
        if pacing.chunk_delay and index < len(frames) - 1 and writer.wait_for_disconnect(pacing.chunk_delay):
            return
    writer.end_stream()
