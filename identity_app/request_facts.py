"""What the auth and rate-limit middleware need from a POST /v1/responses body, read leniently.

The view validates the body properly; this only pulls out the model and a token estimate, and
gives up quietly (None) on anything malformed so the view can produce the real 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

# About four bytes of JSON per token: an estimate, corrected by reconciliation with real usage.
BYTES_PER_TOKEN = 4


@dataclass(frozen=True)
class CreateFacts:
    model: str | None
    max_output_tokens: int | None
    input_estimate: int


def is_create(request: HttpRequest) -> bool:
    return request.method == "POST" and request.path.rstrip("/") == "/v1/responses"


def create_facts(request: HttpRequest) -> CreateFacts | None:
    if not is_create(request):
        return None
    cached = getattr(request, "_gateway_create_facts", False)
    if cached is not False:
        return cached
    facts = _parse(request)
    request._gateway_create_facts = facts  # type: ignore[attr-defined]
    return facts


def _parse(request: HttpRequest) -> CreateFacts | None:
    try:
        body = request.body
    except RequestDataTooBig:
        return None  # the view raises it again, where the error middleware renders the 413
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    model = data.get("model") if isinstance(data.get("model"), str) else None
    max_out = data.get("max_output_tokens")
    if not isinstance(max_out, int) or isinstance(max_out, bool) or max_out < 0:
        max_out = None
    return CreateFacts(model=model, max_output_tokens=max_out, input_estimate=len(body) // BYTES_PER_TOKEN + 1)
