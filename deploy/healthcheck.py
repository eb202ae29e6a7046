"""The image's HEALTHCHECK: GET /health on this container's own port, as a client the gateway serves.

Standard library only. The port comes from GATEWAY_BIND; the Host header is the first entry of
ALLOWED_HOSTS, since the gateway answers 400 to a Host it does not list (a leading dot, Django's
"this domain and its subdomains", is dropped; `*` becomes localhost). Exit status 0 when healthy.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping


def target(environ: Mapping[str, str]) -> tuple[str, str]:
    host, _, port = environ.get("GATEWAY_BIND", "127.0.0.1:8080").rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - every interface includes loopback
        host = "127.0.0.1"
    url = f"http://[{host}]:{port}/health" if ":" in host else f"http://{host}:{port}/health"
    names = [name.strip() for name in environ.get("ALLOWED_HOSTS", "").split(",") if name.strip()]
    name = next((name.lstrip(".") for name in names if name != "*"), "localhost")
    return url, name


def main() -> int:
    url, name = target(os.environ)
    request = urllib.request.Request(url, headers={"Host": name})  # noqa: S310 - http to this container
    try:
        with urllib.request.urlopen(request, timeout=4) as response:  # noqa: S310 - as above
            return 0 if response.status == 200 else 1
    except OSError as exc:
        sys.stderr.write(f"unhealthy: {url} (Host: {name}): {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
