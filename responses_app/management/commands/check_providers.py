"""A tiny live probe of every provider entry, printed as a table; exit 1 when any fails.

Each entry is asked the cheapest question its type has, for the first model routed to it (or
`--model`): a token count where the upstream has a count endpoint (Anthropic, Gemini, an OpenAI
Responses API), which costs nothing, and otherwise a generate capped at one output token (Chat
Completions, Azure OpenAI; `--generate` asks every entry that way). The probe calls the provider
directly, with no retries, fallbacks or circuit breaker, and its timeouts capped at `--timeout`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway_project.cli import render_table
from gateway_project.config import GatewayConfig, ModelEntry, ProviderEntry
from responses_app.providers.base import Provider, ProviderRequest, TextDelta
from responses_app.providers.registry import PROVIDER_CLASSES
from responses_app.providers.scrub import remember_secret, scrub

# Route types whose upstream counts tokens for free (the others are asked for one output token).
COUNTING = ("openai:responses", "anthropic", "google")
# OpenAI's Responses API refuses max_output_tokens below 16.
MIN_OUTPUT_TOKENS = {"openai:responses": 16}


@dataclass
class Probe:
    entry: str
    type: str
    endpoint: str
    model: str
    result: str = "timeout"
    ok: bool = False
    seconds: float | None = None


def _route_type(entry: ProviderEntry) -> str:
    return f"{entry.type}:{entry.api}" if f"{entry.type}:{entry.api}" in PROVIDER_CLASSES else entry.type


def _concrete(key: str, entry: ProviderEntry, timeout: float) -> Provider:
    capped = entry.model_copy(update={
        "connect_timeout": min(entry.connect_timeout, timeout), "read_timeout": min(entry.read_timeout, timeout),
        "first_byte_timeout": min(entry.effective_first_byte_timeout, timeout),
        "idle_timeout": min(entry.effective_idle_timeout, timeout), "total_timeout": min(entry.total_timeout, timeout),
    })
    module, _, name = PROVIDER_CLASSES[_route_type(entry)].rpartition(".")
    provider: Provider = getattr(import_module(module), name)(key, capped)
    return provider


def _endpoint(entry: ProviderEntry) -> str:
    if entry.type == "demo":
        return "built-in"
    module = PROVIDER_CLASSES[_route_type(entry)].rpartition(".")[0]
    return entry.endpoint or str(getattr(import_module(module), "DEFAULT_ENDPOINT", ""))


def _ask(provider: Provider, route_type: str, model: str, generate: bool) -> str:
    prompt = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say OK."}]}
    request = ProviderRequest(model=model, items=[prompt], max_output_tokens=MIN_OUTPUT_TOKENS.get(route_type, 1))
    if route_type in COUNTING and not generate:
        return f"ok: {provider.count_input_tokens(request)} input tokens counted"
    text = "".join(event.text for event in provider.generate(request) if isinstance(event, TextDelta))
    return f"ok: answered {text.strip()[:20]!r}"


class Command(BaseCommand):
    help = ("Probe every provider entry live (a free token count where the upstream has one, else a 1-token "
            "generate) and print a table; exit 1 when any probe fails.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                            help="per probe, connection included (default: 10)")
        parser.add_argument("--provider", action="append", default=[], metavar="KEY",
                            help="probe only this entry (repeatable)")
        parser.add_argument("--model", help="probe this model's entry with this model (instead of the first "
                                            "model routed to each entry)")
        parser.add_argument("--generate", action="store_true",
                            help="ask every entry for one output token, even where counting is free")

    def handle(self, *args: Any, timeout: float, provider: list[str], model: str | None, generate: bool,
               **options: Any) -> None:
        config: GatewayConfig = settings.GATEWAY
        if timeout <= 0:
            raise CommandError("--timeout: must be more than 0")
        targets = self._targets(config, provider, model)
        probes = [self._probe(key, entry, chosen, timeout, generate) for key, entry, chosen in targets]
        deadline = time.monotonic() + timeout + 1
        for _, thread in probes:
            thread.join(max(0.0, deadline - time.monotonic()))
        rows = [[p.entry, p.type, p.endpoint, p.model, p.result,
                 f"{p.seconds * 1000:.0f} ms" if p.seconds is not None else "-"] for p, _ in probes]
        self.stdout.write(render_table(["entry", "type", "endpoint", "model", "result", "latency"], rows,
                                       right=[5]))
        failed = [p.entry for p, _ in probes if not p.ok]
        if failed:
            self.stderr.write(f"{len(failed)} of {len(probes)} provider entries failed: {', '.join(failed)}")
            raise SystemExit(1)
        self.stderr.write(f"all {len(probes)} provider entries answered")

    @staticmethod
    def _targets(config: GatewayConfig, keys: list[str], model: str | None,
                 ) -> list[tuple[str, ProviderEntry, ModelEntry | None]]:
        if unknown := [key for key in keys if key not in config.providers]:
            raise CommandError(f"--provider: no entry {unknown[0]!r} (configured: {', '.join(config.providers)})")
        if model is not None:
            chosen = config.model(model)
            if chosen is None:
                raise CommandError(f"--model: {model!r} is not a configured model")
            return [(chosen.provider, config.providers[chosen.provider], chosen)]
        return [(key, entry, next((m for m in config.models if m.provider == key), None))
                for key, entry in config.providers.items() if not keys or key in keys]

    def _probe(self, key: str, entry: ProviderEntry, model: ModelEntry | None, timeout: float,
               generate: bool) -> tuple[Probe, threading.Thread]:
        route_type = _route_type(entry)
        probe = Probe(key, route_type, scrub(_endpoint(entry)), model.upstream_model if model else "-")
        remember_secret(entry.api_key)

        def run() -> None:
            if entry.missing_key:
                probe.result = f"FAIL: {entry.missing_key_message(key).removeprefix(f'provider {key!r} has ')}"
                return
            if model is None:
                probe.result, probe.ok = "skipped: no model is routed to it", True
                return
            started = time.monotonic()
            try:
                provider = _concrete(key, entry, timeout)
                try:
                    probe.result = _ask(provider, route_type, model.upstream_model, generate)
                    probe.ok = True
                finally:
                    provider.close()
            except Exception as exc:  # noqa: BLE001 - any failure is this probe's result, reported in the table
                probe.result = f"FAIL: {scrub(str(exc)) or type(exc).__name__}"[:160]
            finally:
                probe.seconds = time.monotonic() - started

        # A thread per entry: they run side by side, and one that hangs past --timeout is left behind.
        thread = threading.Thread(target=run, name=f"probe-{key}", daemon=True)
        thread.start()
        return probe, thread
