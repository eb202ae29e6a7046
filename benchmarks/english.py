"""Ordinary English text for the benchmarks' answers and inputs: what Postgres's stemmer, the
admin's search index and the stored JSON see in real traffic, reproducibly."""

from __future__ import annotations

import random

# Common English words, and some of the gateway's own domain.
VOCABULARY = [
    "the", "of", "and", "to", "in", "is", "that", "it", "for", "as", "with", "was", "on", "be", "by", "this",
    "are", "or", "from", "at", "an", "which", "not", "have", "has", "can", "will", "one", "all", "their",
    "there", "been", "if", "more", "when", "would", "what", "some", "time", "could", "other", "into", "only",
    "also", "its", "new", "first", "two", "may", "any", "these", "such", "then", "them", "after", "most",
    "over", "used", "use", "made", "well", "way", "each", "should", "people", "through", "many", "where",
    "much", "before", "those", "must", "both", "state", "between", "world", "number", "under", "because",
    "answer", "question", "response", "model", "request", "server", "client", "stored", "history",
    "context", "function", "result", "output", "input", "message", "assistant", "user", "system",
    "gateway", "database", "conversation", "stream", "token", "limit", "running", "runs", "ran", "written",
    "writes", "wrote", "reading", "reads", "read", "searching", "searched", "search", "results",
]


def words(count: int, *, seed: int = 13, rng: random.Random | None = None) -> list[str]:
    """`count` words drawn by `rng`, or by a generator of its own seeded with `seed`."""
    rng = rng or random.Random(seed)  # noqa: S311 - reproducible text, not a secret
    return [rng.choice(VOCABULARY) for _ in range(count)]


def text(count: int, *, seed: int = 13, rng: random.Random | None = None) -> str:
    return " ".join(words(count, seed=seed, rng=rng)) + "."
