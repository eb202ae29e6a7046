"""What storing one turn costs as its answer grows: the admin's full-text index inside the turn's
statement (migration 0007) against beside it (0009, conversations_app.search_index).

    .venv/bin/python benchmarks/turn_write.py [--words 10,300,1500] [--writes 200] [--rounds 4]

The suite's fake upstreams answer a few words, so its stored turns are small. Real answers are
hundreds of words, and every stored item is indexed for the admin's search: `to_tsvector('english',
data)`, about 1 µs of Postgres per word.

This runs the gateway's own turn statement (`conversations_app.turn_statements.write_turn`: the
conversation, the response row and its items in one statement, committed) on a scratch database
migrated like the gateway's, one turn at a time as a request at concurrency 1 would, with a 30-word
input message and an answer of each size in `--words` (English text), in two states:

- `in the statement`: 0007's GIN index on the item table's words, no trigger (before 0009);
- `now`: the trigger noting new items pending; after each size's writes, the pending items are
  indexed as a worker does it (`search_index.index_pending`), timed apart: the same words still
  cost Postgres their time, off the turn's path.

Rounds alternate the states and the order of sizes, so the machine's drift falls on both alike. The
figures are wall times (the statement's round trip and its commit's WAL flush), medians.
Needs Postgres at 127.0.0.1:5432.
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

import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import english  # noqa: E402 - importable once the checkout is on sys.path

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
OLD_INDEX = "conversations_app_item_text_search"
OLD_INDEX_SQL = (f"CREATE INDEX {OLD_INDEX} ON conversations_app_item "
                 "USING gin (to_tsvector('english'::regconfig, data))")
TRIGGER = "conversations_app_item_search_pending"
TRIGGER_SQL = (f"CREATE TRIGGER {TRIGGER} AFTER INSERT ON conversations_app_item REFERENCING NEW TABLE AS new_items "
               f"FOR EACH STATEMENT EXECUTE FUNCTION {TRIGGER}()")

def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(english.VOCABULARY) for _ in range(words)) + "."


def message(role: str, kind: str, body: str) -> dict[str, Any]:
    return {"id": "msg_" + secrets.token_hex(24), "type": "message", "role": role, "status": "completed",
            "content": [{"type": kind, "text": body, **({"annotations": []} if kind == "output_text" else {})}]}


@contextmanager
def scratch_database() -> Iterator[str]:
    name = f"bench_turn_write_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        from django.db import connections
        connections.close_all()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
        inputs = [message("user", "input_text", text(rng, 30))]
        outputs = [message("assistant", "output_text", text(rng, words))]
        started = time.perf_counter()
        turn_statements.write_turn(conversation=conversation, response=response, input_items=inputs,
                                   output_items=outputs)
        return time.perf_counter() - started

    return write


def set_state(in_statement: bool) -> None:
    """0007's index inside the turn's statement, or 0009's trigger and pending items."""
    from django.db import connection
    with connection.cursor() as cursor:
        if in_statement:
            cursor.execute(f"DROP TRIGGER {TRIGGER} ON conversations_app_item")
            cursor.execute(OLD_INDEX_SQL)
        else:
            cursor.execute(f"DROP INDEX {OLD_INDEX}")
            cursor.execute(TRIGGER_SQL)
        cursor.execute("ANALYZE conversations_app_item")


Figures = dict[tuple[str, int], list[float]]


def measure(sizes: list[int], writes: int, rounds: int, seed: int = 13) -> Figures:
    """Wall seconds per turn write by (state, answer words), and per item indexed afterwards by
    ("indexer", answer words)."""
    from conversations_app import search_index

    rng = random.Random(seed)  # noqa: S311 - reproducible text, not a secret
    write = turn_writer(rng)
    for _ in range(20):  # the connection, the statement prepared (psycopg prepares after 5 runs)
        write(sizes[0])
    search_index.index_pending()
    figures: Figures = {}
    for round_ in range(rounds):
        for in_statement in ((True, False) if round_ % 2 == 0 else (False, True)):
            if in_statement:
                set_state(in_statement=True)
            for words in sizes if round_ % 2 == 0 else sizes[::-1]:
                figures.setdefault(("in the statement" if in_statement else "now", words), []).extend(
                    write(words) for _ in range(writes))
                if not in_statement:
                    started = time.perf_counter()
                    indexed = search_index.index_pending()
                    figures.setdefault(("indexer", words), []).append((time.perf_counter() - started) / indexed)
            if in_statement:
                set_state(in_statement=False)
    return figures


def report(figures: Figures, sizes: list[int]) -> str:
    lines = ["| answer words | turn write, words indexed in the statement (0007), µs | turn write now (0009), µs "
             "| change | the indexer afterwards, µs per item (2 items a turn) |",
             "|---:|---:|---:|---:|---:|"]
    for words in sizes:
        before = statistics.median(figures[("in the statement", words)]) * 1e6
        now = statistics.median(figures[("now", words)]) * 1e6
        indexer = statistics.median(figures[("indexer", words)]) * 1e6
        lines.append(f"| {words} | {before:.0f} | {now:.0f} | {now - before:+.0f} ({(now - before) / before:+.0%}) "
                     f"| {indexer:.0f} |")
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
