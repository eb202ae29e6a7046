"""The soak of benchmarks/soak.py at a size the suite can afford, asserting the same properties.

2,000 mixed requests at concurrency 50 against a real 2-worker gunicorn: non-streamed and
streamed creates, 3-turn `previous_response_id` chains, and streams whose clients hang up before
the first byte, after `response.created` or mid-text. Afterwards the books must balance exactly
(stored rows, upstream calls, `http_requests_total`, token counters, nothing left `in_progress`
or open upstream) and each worker's RSS must stay within the bound after warm-up. Every check is
computed by benchmarks/soak.py, which also runs the full 20,000-request soak (docs/reliability.md).
"""

from __future__ import annotations

import pytest

from benchmarks.soak import HANG_UP_MODES, run_soak

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REQUESTS = 2000
CONCURRENCY = 50


def test_a_mixed_soak_balances_every_count_and_leaves_worker_memory_flat():
    result = run_soak(REQUESTS, CONCURRENCY, seed=11)
    report = result.render()
    print("\n" + report)

    # The load was what it claims to be: every request sent, every kind and hang-up point present.
    assert len(result.sent) == REQUESTS, report
    kinds = {o.spec.kind for o in result.sent}
    assert kinds == {"json", "stream", "chain", "hang-up"}, report
    assert {o.spec.turn for o in result.sent if o.spec.kind == "chain"} == {1, 2, 3}, report
    assert all(result.hang_up_counts[mode] > 0 for mode in HANG_UP_MODES), report
    assert result.hang_up_counts["saw their id"] > 0, report

    failed = [f"{check.name}: {check.detail}" for check in result.checks if not check.ok]
    assert not failed, "\n".join(failed) + "\n\n" + report
    assert len(result.checks) == 10, report
