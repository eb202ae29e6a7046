"""Public ids in OpenAI's shapes: a prefix and 48 hex characters."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"
