"""A forward HTTP proxy on loopback that records what it carried: a plain-HTTP request comes in
absolute form (`POST http://host:port/path`) and is relayed to its target; HTTPS comes as
`CONNECT host:port` and gets a tunnel, through which the client speaks TLS to the target itself."""

from __future__ import annotations

import http.client
import select
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# Hop-by-hop headers: for the proxy, not passed on.
_HOP = {"proxy-authorization", "proxy-connection", "connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass(frozen=True)
class Carried:
    method: str
    target: str  # the absolute URL, or host:port for CONNECT
    headers: dict[str, str]  # lower-cased names


class RecordingProxy:
    def __init__(self) -> None:
        self.carried: list[Carried] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _record(self) -> None:
                proxy.carried.append(Carried(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))

            def do_POST(self) -> None:
                self._record()
                url = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
                try:
                    target.request("POST", url.path + (f"?{url.query}" if url.query else ""), body,
                                   {k: v for k, v in self.headers.items() if k.lower() not in _HOP})
                    answer = target.getresponse()
                    data = answer.read()  # chunks joined; any Content-Encoding is left as it is
                finally:
                    target.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in _HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_CONNECT(self) -> None:
                self._record()
                host, _, port = self.path.rpartition(":")
                target = socket.create_connection((host, int(port)), timeout=10)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                ends = [self.connection, target]
                try:
                    while True:
                        readable, _, _ = select.select(ends, [], [], 10)
                        if not readable:
                            return
                        for end in readable:
                            data = end.recv(65536)
                            if not data:
                                return
                            (target if end is self.connection else self.connection).sendall(data)
                finally:
                    target.close()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, name="recording-proxy", daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
