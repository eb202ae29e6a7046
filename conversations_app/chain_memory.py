"""The chains a worker stored last, kept in its memory, so that the turn after them is not read back.

A turn that follows `previous_response_id` needs every input and output item of its chain, and
read from Postgres that read grows with the chain: at turn 50 (a hundred short items) 0.5 ms of
Postgres and 0.07 ms of decoding, against 0.1 ms at turn 2, and a coding agent's context of a
megabyte is a megabyte read and decoded on every turn. Yet the worker that serves a turn has
usually just written the one it follows, and held its whole context to do so: a client continues
a chain over the same keep-alive connection, so the same worker.

So each worker keeps the context after each turn it stored (or chain it read), exactly as
`read_chain` would give it back, and the store serves a chain from here after one indexed read
that the response is still there, the caller's own and not deleted (ConversationStore.get_chain).
What is kept cannot change: a settled turn's items are never rewritten (a deleted response's
stay in the chains that follow it), and a turn is only kept once settled, so never
`in_progress`. Whether it may be seen is never kept: that is asked of Postgres every time, so
a delete, a purge or another owner is answered as without this memory. The other worker, or a
restarted one, reads the chain from Postgres as before.

A chain's first turn is not kept: most requests are never continued (they would fill the memory
with what no turn asks for, 8 MB a worker in the benchmark suite's load), and reading a chain of
one turn back costs Postgres no more than the check. So a chain is kept from its second turn on,
or once a turn has read it. Only the latest response of a chain is kept (its entry replaces its
parent's, which holds the same items but the last turn's), and entries are evicted least recently
used beyond a budget per worker (`CHAIN_MEMORY_MB`, counted as what the entries hold in memory,
see ITEM_OVERHEAD; 0 turns this off). Items are shared, not copied, with the turns that use them:
nothing downstream changes an item in place.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

from gateway_project import fast_json

if TYPE_CHECKING:
    from conversations_app.store import Chain

# What the kept items hold in a worker's memory besides their JSON text: about 700 bytes an item
# (its dicts, lists and small strings) and 500 an entry (the entry, its Chain, its list), measured
# with tracemalloc for messages of 10 to 1,000 words (within 2 % of this estimate). With them the
# budget is the memory the entries hold, not their JSON, which is 40 % of it for short messages.
ITEM_OVERHEAD = 700
ENTRY_OVERHEAD = 500


@dataclass(frozen=True)
class _Entry:
    owner: str
    chain: Chain
    # The JSON size of the chain's items, in bytes.
    size: int

    @property
    def cost(self) -> int:
        """About what the entry holds in memory."""
        return self.size + ITEM_OVERHEAD * len(self.chain.items) + ENTRY_OVERHEAD


def json_size(items: Sequence[dict[str, Any]]) -> int:
    return len(fast_json.encode(items)) if items else 0


class ChainMemory:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()

    def recall(self, response_id: str, owner: str) -> Chain | None:
        """The chain after `response_id` if it is kept here for this owner (its visibility not checked)."""
        with self._lock:
            entry = self._entries.get(response_id)
            if entry is None or entry.owner != owner:
                return None
            self._entries.move_to_end(response_id)
            return entry.chain

    def remember_read(self, chain: Chain, owner: str, size: int | None = None) -> None:
        """A chain just read from the store (`size`: its items' JSON size, when known)."""
        if self.budget > 0 and not chain.in_progress:
            self._keep(chain, owner, json_size(chain.items) if size is None else size, replaces=None)

    def remember_turn(self, chain: Chain, owner: str, *, parent: Chain | None, added: Sequence[dict[str, Any]]) -> None:
        """The context after a turn just stored: `parent`'s (the stored response it followed; None
        for a chain's first turn, which is not kept) with `added`, what the turn stored."""
        if self.budget <= 0 or parent is None:
            return  # a chain's first turn: see the module doc
        with self._lock:
            kept = self._entries.get(parent.response_id)
        base = kept.size if kept is not None else json_size(parent.items)
        self._keep(chain, owner, base + json_size(added), replaces=parent.response_id)

    def forget(self, response_id: str) -> None:
        with self._lock:
            self._drop(response_id)

    def _keep(self, chain: Chain, owner: str, size: int, *, replaces: str | None) -> None:
        with self._lock:
            if replaces is not None:
                self._drop(replaces)
            self._drop(chain.response_id)
            entry = _Entry(owner, chain, size)
            if entry.cost > self.budget:
                return
            while self._used + entry.cost > self.budget:
                _, evicted = self._entries.popitem(last=False)
                self._used -= evicted.cost
            self._entries[chain.response_id] = entry
            self._used += entry.cost

    def _drop(self, response_id: str) -> None:
        entry = self._entries.pop(response_id, None)
        if entry is not None:
            self._used -= entry.cost

    @property
    def used_bytes(self) -> int:
        """About what the kept entries hold in memory."""
        return self._used

    def __len__(self) -> int:
        return len(self._entries)


memory = ChainMemory(int(settings.CHAIN_MEMORY_MB * 1024 * 1024))
