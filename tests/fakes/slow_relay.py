"""A TCP relay on loopback that holds every reply of its target for a fixed delay: a Redis (or any
server) that answers late but surely. It runs in a process of its own (`python -m
tests.fakes.slow_relay HOST PORT DELAY`, printing the port it listens on), so it keeps its timing
while the process under test is busy or gevent-patched."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tests.e2e.gunicorn import ROOT


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay: float) -> None:
    try:
        while data := await source.read(65536):
            if delay:
                await asyncio.sleep(delay)
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        sink.close()


async def _serve(host: str, port: int, delay: float) -> None:
    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        target_reader, target_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(_pipe(client_reader, target_writer, 0.0),
                             _pipe(target_reader, client_writer, delay))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


@contextmanager
def slow_relay(host: str, port: int, delay: float) -> Iterator[int]:
    """The port of a relay to host:port whose replies come `delay` seconds late."""
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.slow_relay", host, str(port), str(delay)],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
