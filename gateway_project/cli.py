"""Helpers the management commands share: progress lines on stderr, tables, dates from flags.

Results go to stdout (so they can be piped or redirected), progress to stderr: on a terminal a
bar redrawn in place, elsewhere (cron, a pipe) a plain line per step, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TextIO, cast

from django.utils import timezone

from gateway_project.config import parse_duration


def raw_stream(wrapper: Any) -> TextIO:
    """The stream under a command's `self.stderr` (an OutputWrapper, which ends every write with a
    newline: a bar redrawn in place needs the stream itself)."""
    return cast(TextIO, getattr(wrapper, "_out", wrapper))


class Progress:
    """`done` out of `total` (None when unknown): on a terminal a bar redrawn in place, elsewhere a
    line at most every `interval` seconds, and always the last one."""

    def __init__(self, label: str, total: int | None = None, *, stream: TextIO | None = None,
                 interval: float | None = None) -> None:
        self.label, self.total = label, total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        # A bar is redrawn often; a log gets a line every few seconds (and the last one).
        self.interval = interval if interval is not None else (0.2 if self.tty else 2.0)
        self._last: float | None = None
        self._drawn = False

    def update(self, done: int, note: str = "") -> None:
        now = time.monotonic()
        finished = self.total is not None and done >= self.total
        if self._last is not None and now - self._last < self.interval and not finished:
            return
        self._last = now
        line = f"{self.label}: {self._bar(done)}{f'  {note}' if note else ''}"
        if self.tty:
            self.stream.write(f"\r\x1b[2K{line}")
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()

    def _bar(self, done: int) -> str:
        if not self.total:
            return f"{done}"
        share = min(done / self.total, 1.0)
        if not self.tty:
            return f"{done}/{self.total} ({share:.0%})"
        filled = round(share * 24)
        return f"[{'#' * filled}{'.' * (24 - filled)}] {done}/{self.total} ({share:.0%})"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[int] = ()) -> str:
    """A plain-text table: columns as wide as their widest cell, those in `right` aligned right."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        cells = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        return "  ".join(cells).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *(line(r) for r in cells[1:])])


def parse_when(value: str, *, flag: str) -> datetime:
    """A moment from a flag: `2026-11-30`, `2026-11-30T12:00` (UTC unless it says otherwise) or an age
    like `7d` / `12h` (that long ago)."""
    try:
        return timezone.now() - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{flag}: expected a date (2026-11-30), a time (2026-11-30T12:00) "
                         f"or an age (7d, 12h), got {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_day(value: str, *, flag: str) -> date:
    """A day from a flag: `2026-11-30` or an age like `7d` (the day that long ago, UTC)."""
    return parse_when(value, flag=flag).astimezone(UTC).date()
