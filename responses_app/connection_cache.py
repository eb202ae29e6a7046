"""The responses a WebSocket connection keeps in memory, so `store: false` turns can be continued.

Over HTTP a `previous_response_id` must name a stored response. On a WebSocket connection a
response created with `store: false` can be continued too, from this cache: each entry is the
whole context after that response (every input and output item of its chain), so the next turn
sends only its new input and nothing touches Postgres. The cache belongs to one connection: a new
connection starts empty, and an id that is neither here nor stored is `previous_response_not_found`.
A continuation on the same lane that fails evicts the entry it started from, so a client retries
from a state it knows rather than one half-applied (a failed fork from another lane keeps it, so
that lane can go on).
Stored responses are not kept here: they are read from Postgres exactly as over HTTP.
"""

from __future__ import annotations

from conversations_app.store import Chain


class ConnectionCache:
    """Each lane (`stream_id`; None is the default lane) keeps its latest unstored response, as
    OpenAI's service does: continuing a lane, or forking from another lane's latest, is served from
    memory, and memory per connection is bounded by its lanes (at most 33)."""

    def __init__(self) -> None:
        self._latest: dict[str | None, Chain] = {}

    def get(self, response_id: str) -> Chain | None:
        for chain in self._latest.values():
            if chain.response_id == response_id:
                return chain
        return None

    def lane_of(self, response_id: str) -> str | bool | None:
        """The lane whose latest response this is (False: none)."""
        for lane, chain in self._latest.items():
            if chain.response_id == response_id:
                return lane
        return False

    def put(self, lane: str | None, chain: Chain) -> None:
        self._latest[lane] = chain

    def evict(self, response_id: str) -> None:
        for lane, chain in list(self._latest.items()):
            if chain.response_id == response_id:
                del self._latest[lane]

    def __len__(self) -> int:
        return len(self._latest)
