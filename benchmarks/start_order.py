"""Which checkout's gateway is started first, and for which rounds.

Comparing identical code side by side (the same commit unpacked twice or three times), the gateway
started earlier measured more CPU than the one started after it, whatever the order of the batches:
0.10-0.16 ms per request in request_cpu.py and 0.34 ms per WebSocket turn in websocket_turn_cpu.py
(benchmarks/RESULTS.md, 2026-12-03, eighth session; the cause was not found). So the scripts that
compare checkouts run half of their rounds with the gateways started in the given order and half
with them started again in the reverse order, which cancels it in the paired differences.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def halves(checkouts: Sequence[T], rounds: int) -> Iterator[tuple[list[T], range]]:
    """(the checkouts in the order to start them, the rounds to run with them started so): the
    first half of the rounds in the given order, the rest in the reverse one."""
    first = (rounds + 1) // 2
    yield list(checkouts), range(first)
    if rounds > first:
        yield list(checkouts)[::-1], range(first, rounds)
