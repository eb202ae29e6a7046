"""Credentials never leave the gateway in an error message.

An upstream may echo what it was sent ("Incorrect API key provided: sk-proj-…"), a URL may carry
a key, and those messages reach clients, log lines and spans. Every `ProviderError` message goes
through `scrub()`: the configured provider keys are replaced wherever they appear, and so is
anything shaped like a credential (OpenAI/Anthropic/Google/gateway keys, bearer tokens, JWTs,
`key=` parameters), including keys the gateway was never told about.
"""

from __future__ import annotations

import re
import threading

REDACTED = "[redacted]"

_CREDENTIAL = re.compile(
    r"\bsk-[A-Za-z0-9_\-]{8,}"  # OpenAI and Anthropic (sk-ant-…) keys
    r"|\bAIza[0-9A-Za-z_\-]{20,}"  # Google API keys
    r"|\bgwk_[A-Za-z0-9_\-]{8,}"  # this gateway's own keys
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"  # JWTs
    r"|(?i:\bbearer)\s+[A-Za-z0-9._~+/=\-]{8,}"
)
_KEY_PARAMETER = re.compile(
    r"(?i)(\b(?:api[-_]?key|access[-_]?token|token|secret|password)[\"']?\s*[=:]\s*[\"']?|[?&]key=)"
    r"([^\s&\"',;]{4,})"
)

_known: set[str] = set()
_lock = threading.Lock()


def remember_secret(value: str | None) -> None:
    """A configured credential to scrub wherever it appears (short values would scrub ordinary words)."""
    if value and len(value) >= 8:
        with _lock:
            _known.add(value)


def scrub(text: str) -> str:
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _CREDENTIAL.sub(REDACTED, text)
    return _KEY_PARAMETER.sub(lambda m: m.group(1) + REDACTED, text)
