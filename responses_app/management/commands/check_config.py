"""Print the gateway's effective configuration, with secrets redacted, or the one line that says
what is wrong with it.

"Effective" is what the gateway runs with: the YAML file with `${VAR}` expanded from this
environment and every default filled in (durations in seconds). Credentials never reach the
output: provider keys, header values, bearer tokens, passwords in URLs, and any value the
error-message scrubber takes for a credential (responses_app.providers.scrub) are replaced by
`[redacted]`; an empty one stays empty, so a missing key shows as missing.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from gateway_project.config import ConfigError, GatewayConfig, load_config
from responses_app.providers.scrub import REDACTED, scrub

# Keys whose values are credentials whatever they look like; every value of a mapping under `headers`.
_SECRET_KEY = re.compile(r"(?i)(api[_-]?key|token|secret|password|passwd|credential)$")
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@", re.IGNORECASE)


def redact(value: Any, key: str = "", *, all_values: bool = False) -> Any:
    """`value` (a parsed config tree) with every credential replaced by `[redacted]`."""
    if isinstance(value, dict):
        return {k: redact(v, str(k), all_values=all_values or str(k).lower() == "headers") for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key, all_values=all_values) for v in value]
    if not isinstance(value, str) or not value:
        return value
    if all_values or _SECRET_KEY.search(key):
        return REDACTED
    return scrub(_URL_PASSWORD.sub(rf"\g<scheme>\g<user>:{REDACTED}@", value))


class Command(BaseCommand):
    help = ("Print the effective gateway config (YAML file, ${VAR} expanded, defaults filled in) with secrets "
            "redacted; exit 2 with the error line when it is invalid.")
    requires_system_checks: list[str] = []  # noqa: RUF012 - Django's attribute, never mutated: no system checks, only the file is read

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--config", metavar="PATH",
                            help="check this file instead of the one the gateway loads (GATEWAY_CONFIG)")

    def handle(self, *args: Any, config: str | None, **options: Any) -> None:
        path = config or settings.GATEWAY_CONFIG_PATH
        if config:
            try:
                loaded: GatewayConfig = load_config(config)
            except ConfigError as exc:
                # The same one line settings.py prints for the gateway's own file (and the same status).
                self.stderr.write(f"config error: {exc}")
                raise SystemExit(2) from None
        else:
            loaded = settings.GATEWAY  # settings.py already stopped with the error line if it was invalid
        self.stdout.write(f"# effective config from {path} (secrets redacted)")
        self.stdout.write(yaml.safe_dump(redact(loaded.model_dump(mode="json")), sort_keys=False).rstrip())
        for warning in loaded.missing_key_warnings():
            self.stderr.write(f"warning: {warning}")
        self.stderr.write(f"config ok: {len(loaded.providers)} provider(s), {len(loaded.models)} model(s)")
