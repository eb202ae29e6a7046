"""The usage rollup: every turn counted once, stored or not, failed ones as errors; per worker the
sums are written in batches, and two writers add up instead of overwriting each other."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Sum

from conversations_app.models import UsageDay
from conversations_app.usage import UsageRollup, rollup
from tests.conftest import ApiClient
from tests.fakes.openai_upstream import Fail, FakeOpenAI, Reply


def _totals() -> dict[str, int]:
    return UsageDay.objects.aggregate(requests=Sum("requests"), errors=Sum("errors"), input=Sum("input_tokens"),
                                      output=Sum("output_tokens"))


def test_every_turn_is_counted_once_stored_or_not(api: ApiClient, fake_openai: FakeOpenAI):
    fake_openai.script(Reply(text="a", prompt_tokens=10, completion_tokens=3),
                       Reply(text="b", prompt_tokens=20, completion_tokens=4), Fail(500))
    assert api.create(model="gpt-test", input="x").status_code == 200
    streamed = api.create(model="gpt-test", input="y", store=False, stream=True)
    assert b"response.completed" in b"".join(streamed.streaming_content)  # type: ignore[attr-defined]
    assert api.create(model="gpt-test", input="z").status_code >= 500
    [row] = UsageDay.objects.all()
    assert (row.model, row.provider, row.owner, row.subject) == ("gpt-test", "openai", "", "")
    assert _totals() == {"requests": 3, "errors": 1, "input": 30, "output": 7}
    assert row.cost_usd >= Decimal(0)


def test_batched_sums_are_written_when_flushed_and_two_writers_add_up(db: None):
    first, second = UsageRollup(), UsageRollup()
    first.batched = second.batched = True
    for writer in (first, second):
        for _ in range(3):
            writer.record(model="m", provider="p", owner="acme", subject="key:1", failed=False,
                          usage={"input_tokens": 5, "output_tokens": 2}, cost_usd=0.001)
    assert not UsageDay.objects.exists()  # nothing written per turn
    assert first.flush() == 1 and second.flush() == 1 and first.flush() == 0
    [row] = UsageDay.objects.all()
    assert (row.requests, row.input_tokens, row.output_tokens, row.cost_usd) == (6, 30, 12, Decimal("0.006"))


def test_the_shared_rollup_writes_at_once_outside_a_worker():
    assert rollup.batched is False
