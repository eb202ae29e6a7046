"""What the middleware learned about a request, in one typed place (Zulip's `RequestNotes` idea).

Middleware records facts here (the request id, the trace span, who is calling, the rate-limit
decision) instead of hanging ad-hoc attributes on the request. The view reads them once to build
the turn's context (responses_app.context.TurnContext) and passes that down explicitly: nothing
below the view looks at the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest

if TYPE_CHECKING:
    from identity_app.identity import Identity


@dataclass
class RequestNotes:
    request_id: str = ""
    # The server span's context (tracing middleware), for the access log's trace_id/span_id.
    trace_span_context: Any = None
    # A view's exception that no later middleware turned into a response (tracing middleware's
    # process_exception), recorded on the server span when the request ends.
    view_exception: BaseException | None = None
    # Set by the auth middleware: who is calling (None when auth is off or failed).
    identity: Identity | None = None
    auth_failed: bool = False
    # Set by the rate-limit middleware: the gate a view admits its request through, and the
    # ticket once admitted (its headers go on the response; it is settled when the turn ends).
    rate_gate: Any = None
    rate_ticket: Any = None
    rate_decided: bool = False

    @property
    def owner(self) -> str:
        """The tenant that owns what this request creates or reads ('' when auth is off)."""
        return self.identity.owner if self.identity is not None else ""


# One attribute on the request, not a WeakKeyDictionary keyed by it: the notes hold the rate gate,
# which holds the request, so a weak key never died and every create was kept alive for good (about
# 13 KB a request, ~7 MB per 1,000 in each worker; found by benchmarks/suite.py). On the request,
# the notes die with it.
_ATTRIBUTE = "_gateway_notes"


def notes_of(request: HttpRequest) -> RequestNotes:
    """The request's notes, created empty on first use."""
    notes: RequestNotes | None = getattr(request, _ATTRIBUTE, None)
    if notes is None:
        notes = RequestNotes()
        setattr(request, _ATTRIBUTE, notes)
    return notes
