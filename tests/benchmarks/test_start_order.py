"""benchmarks/start_order.py: every round runs once, half with the checkouts started in the given
order and the rest in the reverse one, so a start-order bias cancels in the paired differences."""

from __future__ import annotations

import pytest

from benchmarks.start_order import halves


@pytest.mark.parametrize(("rounds", "first", "second"), [(8, 4, 4), (5, 3, 2), (1, 1, 0)])
def test_the_rounds_are_split_between_the_two_start_orders(rounds, first, second):
    plan = list(halves(["a", "b", "c"], rounds))
    assert plan[0][0] == ["a", "b", "c"] and len(plan[0][1]) == first
    if second:
        assert plan[1][0] == ["c", "b", "a"] and len(plan[1][1]) == second
    else:
        assert len(plan) == 1
    assert [r for _, block in plan for r in block] == list(range(rounds))
