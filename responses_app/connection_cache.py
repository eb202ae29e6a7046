"""The responses a WebSocket connection keeps in memory, so that its turns are continued without Postgres.

Over HTTP a `previous_response_id` must name a stored response, and its chain is read back from
Postgres on every turn. On a WebSocket connection each lane's latest response is kept here, as
OpenAI's service keeps it in a connection-local cache: each entry is the whole context after that
response (every input and output item of its chain, and for a stored one where its chain sits), so
the next turn sends only its new input, and reads nothing back. That is what lets a `store: false`
response be continued at all, and spares a stored one's continuation the read of its chain, which
grows with every turn. An id that is not here is looked up in Postgres exactly as over HTTP: a
stored response from an earlier connection, or from an older turn of this one. A new connection
starts empty, and an id that is neither here nor stored is `previous_response_not_found`.
A continuation on the same lane that fails evicts the entry it started from, so a client retries
from a state it knows rather than one half-applied (a failed fork from another lane keeps it, so
that lane can go on); a stored one is then read from Postgres again.
A stored response deleted through the HTTP API after its connection kept it can still be continued
on that connection, as a deleted response's content stays in the chains of the responses that
followed it; one whose chain was purged meanwhile is `previous_response_not_found`
(pipeline.Turn._write_opening).
Turns of the Conversations API are not kept: they continue through their conversation.
"""

from __future__ import annotations

from conversations_app.store import Chain


class ConnectionCache:
    """Each lane (`stream_id`; None is the default lane) keeps its latest response, as
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
