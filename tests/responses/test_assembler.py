"""The assembler's cost is linear in the number of deltas (it once concatenated, which is quadratic
and ran on the event loop every stream of a worker shares)."""

from __future__ import annotations

import time

from responses_app.assembler import OutputAssembler
from responses_app.providers.base import Finish, TextDelta, ToolCallDelta


def test_a_hundred_thousand_deltas_assemble_in_linear_time():
    assembler = OutputAssembler()
    started = time.process_time()
    for _ in range(100_000):
        assembler.feed(TextDelta("token "))
    for _ in range(20_000):
        assembler.feed(ToolCallDelta(0, "call_1", "f", '{"a": 1}'))
    assembler.feed(Finish("tool_calls"))
    assembler.finish()
    elapsed = time.process_time() - started
    # Linear: well under a second here. Concatenating would copy ~30 GB and take minutes.
    assert elapsed < 5, elapsed
    assert assembler.output[0]["content"][0]["text"] == "token " * 100_000
    assert assembler.output[1]["arguments"] == '{"a": 1}' * 20_000
