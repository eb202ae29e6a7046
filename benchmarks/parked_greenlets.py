"""Memory of a parked greenlet by the depth of the stack it is parked under.

    .venv/bin/python benchmarks/parked_greenlets.py [--greenlets 1000]

A stream holds two parked greenlets for its whole length (the request's, inside gunicorn's
iteration of the response's generators, and the upstream helper's, inside urllib3's read), so
what a parked greenlet costs is part of what a stream costs. Under gevent a greenlet that switches
out saves the C stack above the hub's; Python 3.11 runs a Python-to-Python call in the same C frame,
so only layers entered through C take C stack: an object's `__call__` (a middleware), a generator
resumed by the one wrapping it (a streaming response's layers). Prints KB of RSS per parked
greenlet for plain Python calls, `__call__` layers and generator layers at depths 0-60, each
measured in a fresh interpreter (memory freed by one batch would be reused by the next).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402 - after gevent patched the standard library
import gc  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

import gevent  # noqa: E402
import psutil  # noqa: E402

PARK = 5.0


class Layer:
    """One `__call__` layer, as a middleware is."""

    def __init__(self, inner: Callable[[], None]) -> None:
        self.inner = inner

    def __call__(self) -> None:
        self.inner()


def parked() -> None:
    gevent.sleep(PARK)


def python_calls(depth: int) -> Callable[[], None]:
    def call(left: int = depth) -> None:
        if left == 0:
            parked()
            return
        call(left - 1)

    return call


def call_layers(depth: int) -> Callable[[], None]:
    target: Callable[[], None] = parked
    for _ in range(depth):
        target = Layer(target)
    return target


def generator_layers(depth: int) -> Callable[[], None]:
    def leaf() -> Iterator[int]:
        parked()
        yield 1

    def wrap(inner: Iterator[int]) -> Iterator[int]:
        yield from iter(inner.__next__, None)  # resumed through C, as a wrapping generator's `for` is

    def run() -> None:
        chain: Iterator[int] = leaf()
        for _ in range(depth):
            chain = wrap(chain)
        next(chain, None)

    return run


def kb_per_greenlet(target: Callable[[], None], count: int) -> float:
    kb_per_greenlet_once(parked, 200)  # the interpreter's own first allocations, out of the figure
    gc.collect()
    before = psutil.Process().memory_info().rss
    greenlets = [gevent.spawn(target) for _ in range(count)]
    gevent.sleep(0.5)
    after = psutil.Process().memory_info().rss
    gevent.killall(greenlets)
    return (after - before) / count / 1024


def kb_per_greenlet_once(target: Callable[[], None], count: int) -> None:
    greenlets = [gevent.spawn(target) for _ in range(count)]
    gevent.sleep(0.1)
    gevent.killall(greenlets)


KINDS = {"python": python_calls, "call": call_layers, "generator": generator_layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--greenlets", type=int, default=1000)
    parser.add_argument("--one", nargs=2, metavar=("KIND", "DEPTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, depth = args.one
        print(f"{kb_per_greenlet(KINDS[kind](int(depth)), args.greenlets):.1f}")
        return
    print("| layers | plain Python calls | `__call__` layers | generator layers |")
    print("|---:|---:|---:|---:|")
    for depth in (0, 10, 30, 60):
        figures = [subprocess.run([sys.executable, __file__, "--greenlets", str(args.greenlets), "--one", kind,  # noqa: S603
                                   str(depth)], capture_output=True, text=True, check=True).stdout.strip()
                   for kind in KINDS]
        print(f"| {depth} | " + " | ".join(f"{kb} KB" for kb in figures) + " |")


if __name__ == "__main__":
    main()
