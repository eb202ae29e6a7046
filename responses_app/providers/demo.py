"""`demo` provider type: a deterministic offline model so a first run with no keys shows the whole
flow (streaming, storage, chaining). For demos only: provider behaviour is tested against HTTP
fakes of the real wire formats, never against this."""

from __future__ import annotations

from collections.abc import Iterator

from responses_app.providers.base import Event, Finish, Provider, ProviderRequest, TextDelta, Usage


def _last_user_text(request: ProviderRequest) -> str:
    for item in reversed(request.items):
        if item.get("type") == "message" and item.get("role") == "user":
            return " ".join(p.get("text", "") for p in item["content"] if p.get("type") == "input_text").strip()
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _prompt_words(request: ProviderRequest) -> int:
    # Word counts, not real tokens: the demo model has no tokenizer, and says so in the README.
    return sum(_words(str(item)) for item in request.items) + _words(request.instructions or "")


class DemoProvider(Provider):
    type = "demo"

    def _reply(self, request: ProviderRequest) -> str:
        said = _last_user_text(request)
        turns = sum(1 for item in request.items if item.get("type") == "message" and item.get("role") == "user")
        return f"This is the gateway's offline demo model (turn {turns}). You said: {said[:200]!r}."

    def _events(self, request: ProviderRequest, chunks: list[str]) -> Iterator[Event]:
        yield from (TextDelta(chunk) for chunk in chunks)
        yield Usage(input_tokens=_prompt_words(request), output_tokens=len(chunks))
        yield Finish("stop")

    def generate(self, request: ProviderRequest) -> Iterator[Event]:
        return self._events(request, [self._reply(request)])

    def stream(self, request: ProviderRequest) -> Iterator[Event]:
        words = self._reply(request).split(" ")
        return self._events(request, [w if i == 0 else " " + w for i, w in enumerate(words)])

    def count_input_tokens(self, request: ProviderRequest) -> int:
        """What the demo model's own usage will say: its word count."""
        return _prompt_words(request)
