"""nginx from Debian as a load balancer on loopback, in front of gateway instances (GatewayProcess).

    with Nginx([a.port, b.port]) as lb:
        requests/openai SDK against lb.url; lb.served() says which upstream answered each request

Configured as in front of a real deployment: HTTP/1.1 to the upstreams with keep-alive, response
buffering off (SSE reaches the client as the gateway writes it), the WebSocket upgrade headers
passed on, X-Forwarded-For/-Proto set. An upstream that refuses connections is marked down and
the request tried on the next one, as long as nothing was sent to the first (nginx never resends
a POST that reached an upstream). Its access log records the upstream of every request.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.e2e.gunicorn import OnLoopback, free_port

# What any nginx run by this harness starts with: one worker, and its pid, logs and temporary
# files in its own directory (Debian's defaults are root's). `http {` is left open for the rest.
PRIVATE = """
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
"""

CONFIG = """
    log_format upstreams '$request_method $uri $status "$upstream_addr" "$upstream_status"';
    access_log {dir}/access.log upstreams;

    upstream gateways {{
        {servers}
        keepalive 32;               # HTTP/1.1 connections kept open to each gateway
    }}
    # A WebSocket upgrade passes Upgrade/Connection on; any other request clears Connection,
    # which keep-alive to the upstream needs.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 16m;
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;    # SSE events go out as the gateway writes them
            proxy_request_buffering off;
            proxy_connect_timeout 2s;
            proxy_read_timeout 1h;  # long streams; the gateway's keep-alive comments keep them busy
            proxy_send_timeout 1h;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


class Nginx(OnLoopback):
    def __init__(self, upstream_ports: list[int]) -> None:
        self.upstream_ports = upstream_ports
        self.port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="gw-nginx-")
        self.dir = Path(self._tmp.name)
        self.proc: subprocess.Popen[bytes] | None = None

    def private(self) -> str:
        """The start of the config (PRIVATE), for this directory and user."""
        # As root, nginx's workers would switch to `nobody`, who cannot use this private directory.
        user = f"user {pwd.getpwuid(os.getuid()).pw_name};" if os.geteuid() == 0 else ""
        return PRIVATE.format(user=user, dir=self.dir)

    def config(self) -> str:
        servers = "\n        ".join(f"server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;"
                                    for port in self.upstream_ports)
        return self.private() + CONFIG.format(dir=self.dir, servers=servers, port=self.port)

    def start(self) -> Nginx:
        (self.dir / "nginx.conf").write_text(self.config())
        check = subprocess.run([nginx_binary(), "-t", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([nginx_binary(), "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                                      "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen on {self.port}")

    def served(self) -> list[tuple[str, str, int, list[int]]]:
        """(method, path, status, upstream ports tried in order) for every request logged so far."""
        rows = []
        for line in (self.dir / "access.log").read_text().splitlines():
            match = re.fullmatch(r'(\S+) (\S+) (\d+) "([^"]*)" "[^"]*"', line)
            assert match, line
            method, path, status, upstreams = match.groups()
            # "127.0.0.1:8001, 127.0.0.1:8002" when the first refused; the upstream's name when none was up.
            ports = [int(address.rsplit(":", 1)[1]) for address in upstreams.split(", ") if ":" in address]
            rows.append((method, path, int(status), ports))
        return rows

    def errors(self) -> str:
        path = self.dir / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._tmp.cleanup()

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
