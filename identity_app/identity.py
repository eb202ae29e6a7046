"""Who is calling: the result of authentication, read by the rate limiter and the views."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.http import HttpRequest

from gateway_project.request_notes import notes_of

if TYPE_CHECKING:
    from gateway_project.config import ModelEntry


@dataclass(frozen=True)
class Identity:
    kind: str  # "api_key" | "oidc" | "anonymous"
    owner: str  # tenant label: what the store filters every read and write by
    subject: str  # what the rate limiter counts by ("key:12", "oidc:<sub>")
    allowed_models: frozenset[str] = frozenset()  # empty = every model
    rpm: int | None = None  # per-identity overrides of the global limits
    tpm: int | None = None

    def may_use(self, model: ModelEntry) -> bool:
        """The allow-list names the model or one of its aliases (they are one model)."""
        if not self.allowed_models:
            return True
        return model.name in self.allowed_models or not self.allowed_models.isdisjoint(model.aliases)


def identity_of(request: HttpRequest) -> Identity | None:
    return notes_of(request).identity


def set_identity(request: HttpRequest, identity: Identity) -> None:
    notes_of(request).identity = identity
