"""benchmarks/stream_memory.py's accounting: what a later snapshot holds more than an earlier one,
by the site that allocated it, per stream."""

from __future__ import annotations

import tracemalloc

from benchmarks.stream_memory import by_site, report


def _hold(count: int) -> list[bytearray]:
    return [bytearray(10_000) for _ in range(count)]  # the site by_site must name


def test_what_is_held_between_two_snapshots_is_charged_to_the_line_that_allocated_it():
    tracemalloc.start(5)
    try:
        before = tracemalloc.take_snapshot()
        held = _hold(20)
        during = tracemalloc.take_snapshot()
        del held
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    sites = by_site(during, before, depth=1)
    site, size = sites.most_common(1)[0]
    assert site.startswith("tests/benchmarks/test_stream_memory.py:")
    assert 200_000 <= size < 210_000
    assert sum(by_site(after, before, depth=1).values()) < 10_000  # gone again
    text = report("held", sites, 20, 3)
    assert text.splitlines()[0].startswith("held: ") and text.splitlines()[0].endswith(" KB per stream")
    assert "test_stream_memory.py:" in text
