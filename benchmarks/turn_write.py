"""What storing one turn costs as its answer grows, and the admin's full-text index's part of it.

    .venv/bin/python benchmarks/turn_write.py [--words 10,300,1500] [--writes 200] [--rounds 4]

The suite's short answers hide it: every stored item is indexed for the admin's search (the GIN
index of migration 0007 over `to_tsvector('english', data)`), which Postgres computes inside the
statement that stores the turn, before the commit the client's answer waits for, at about 1 µs per
word.

This runs the gateway's own turn statement (`conversations_app.turn_statements.write_turn`: the
conversation, the response row and its items in one statement, committed) on a scratch database
migrated like the gateway's, one turn at a time as a request at concurrency 1 would, with a 30-word
input message and an answer of each size in `--words` (English text), with the index in place and
dropped. Rounds alternate the two states and the order of sizes, so the machine's drift falls on
both alike. The figures are wall times (the statement's round trip and its commit's WAL flush),
medians. Needs Postgres at 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import english  # noqa: E402 - importable once the checkout is on sys.path
from tests.e2e import gunicorn as gunicorn_harness  # noqa: E402

INDEX = "conversations_app_item_text_search"
INDEX_SQL = f"CREATE INDEX {INDEX} ON conversations_app_item USING gin (to_tsvector('english'::regconfig, data))"


def message(role: str, kind: str, body: str) -> dict[str, Any]:
    return {"id": "msg_" + secrets.token_hex(24), "type": "message", "role": role, "status": "completed",
            "content": [{"type": kind, "text": body, **({"annotations": []} if kind == "output_text" else {})}]}


@contextmanager
def scratch_database() -> Iterator[str]:
    name = f"bench_turn_write_{secrets.token_hex(4)}"
    url = gunicorn_harness.create_database(name)
    try:
        yield url
    finally:
        from django.db import connections
        connections.close_all()
        gunicorn_harness.drop_database(name)


def set_up_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("GATEWAY_CONFIG", str(ROOT / "config.example.yaml"))
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ["DJANGO_SETTINGS_MODULE"] = "gateway_project.settings"
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0, interactive=False)


def turn_writer(rng: random.Random) -> Callable[[int], float]:
    """A function writing one whole turn (a new chain) with an answer of `words` words; returns
    the statement's wall time in seconds."""
    from django.utils import timezone

    from conversations_app import turn_statements

    def write(words: int) -> float:
        now = timezone.now()
        conversation_id, response_id = "conv_" + secrets.token_hex(24), "resp_" + secrets.token_hex(24)
        tokens = {"input_tokens": 40, "output_tokens": words * 4 // 3}
        conversation = turn_statements.conversation_part(new_id=conversation_id, existing_id=None, owner="bench",
                                                         model="bench-model", at=now, now=now, tokens=tokens)
        response = {"id": response_id, "conversation_id": conversation_id, "depth": 0, "owner": "bench",
                    "model": "bench-model", "provider": "bench", "status": "completed", "created_at": now,
                    "completed_at": now, "settings": {}, **tokens}
        inputs = [message("user", "input_text", english.text(30, rng=rng))]
        outputs = [message("assistant", "output_text", english.text(words, rng=rng))]
        started = time.perf_counter()
        turn_statements.write_turn(conversation=conversation, response=response, input_items=inputs,
                                   output_items=outputs)
        return time.perf_counter() - started

    return write


def set_index(present: bool) -> None:
    from django.db import connection
    with connection.cursor() as cursor:
        cursor.execute(INDEX_SQL if present else f"DROP INDEX {INDEX}")
        cursor.execute("ANALYZE conversations_app_item")


Figures = dict[tuple[bool, int], list[float]]


def measure(sizes: list[int], writes: int, rounds: int, seed: int = 13) -> Figures:
    """Wall seconds per turn write, by (index in place, answer words)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible text, not a secret
    write = turn_writer(rng)
    for _ in range(20):  # the connection, the statement prepared (psycopg prepares after 5 runs)
        write(sizes[0])
    figures: Figures = {}
    for round_ in range(rounds):
        for indexed in ((True, False) if round_ % 2 == 0 else (False, True)):
            if not indexed:
                set_index(False)
            for words in sizes if round_ % 2 == 0 else sizes[::-1]:
                figures.setdefault((indexed, words), []).extend(write(words) for _ in range(writes))
            if not indexed:
                set_index(True)
    return figures


def report(figures: Figures, sizes: list[int]) -> str:
    lines = ["| answer words | turn write with the index, µs | without it, µs | the index's part, µs | share |",
             "|---:|---:|---:|---:|---:|"]
    for words in sizes:
        with_index = statistics.median(figures[(True, words)]) * 1e6
        without = statistics.median(figures[(False, words)]) * 1e6
        part = with_index - without
        lines.append(f"| {words} | {with_index:.0f} | {without:.0f} | {part:+.0f} | {part / with_index:.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", default="10,300,1500", help="answer sizes in words, comma-separated")
    parser.add_argument("--writes", type=int, default=200, help="turns per size per round and state")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    sizes = [int(size) for size in args.words.split(",")]
    with scratch_database() as url:
        set_up_django(url)
        figures = measure(sizes, args.writes, args.rounds)
    print(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.rounds} rounds x {args.writes} turns "
          f"per size and state, one at a time; input 30 words; medians.\n")
    print(report(figures, sizes))


if __name__ == "__main__":
    main()
