"""Metrics under gunicorn with two workers: one scrape shows every worker's requests, exactly."""

from __future__ import annotations

import os
import re
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.gunicorn import GatewayProcess
from tests.observability.e2e_config import gateway_yaml

pytestmark = pytest.mark.e2e

N = 40


def totals(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name: str, **labels: str) -> float:
    """Sum of `name` over the samples whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def worker_pids(directory: Path) -> set[int]:
    return {int(m.group(1)) for p in directory.glob("*.db") if (m := re.search(r"_(\d+)\.db$", p.name))}


def worker_totals(directory: Path, pid: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What one worker alone has recorded, read from its own files in the multiprocess directory."""
    files = [str(path) for path in directory.glob(f"*_{pid}.db")]
    out = {}
    for family in MultiProcessCollector.merge(files, accumulate=True):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def served(directory: Path, pid: int) -> float:
    """How many /v1/responses requests one worker has counted, from its own files."""
    return value(worker_totals(directory, pid), "http_requests_total", path="/v1/responses", method="POST")


def test_one_scrape_counts_every_request_of_every_worker_exactly(fake_openai):
    with tempfile.TemporaryDirectory(prefix="obs-multiproc-") as directory:
        stale = Path(directory) / "counter_999999.db"
        stale.write_bytes(b"left over from a previous run")
        gw = GatewayProcess(gateway_yaml(fake_openai.url), workers=2, env={"PROMETHEUS_MULTIPROC_DIR": directory})
        with gw:
            assert not stale.exists(), "on_starting must clear a previous run's files"

            def call(index: int) -> int:
                body = {"model": "gpt-test", "input": f"hi {index}", "stream": index % 2 == 0}
                return requests.post(f"{gw.base_url}/responses", json=body, timeout=30).status_code

            # Concurrent clients, in batches until both workers have served some: which worker
            # accepts a connection is the kernel's choice, and on a loaded machine one worker
            # can take a whole batch (or the other can still be booting).
            sent = 0
            with ThreadPoolExecutor(max_workers=8) as pool:
                while sent < N or sum(1 for pid in worker_pids(Path(directory)) if served(Path(directory), pid)) < 2:
                    assert sent < 20 * N, f"one worker served all {sent} requests\n{gw.log()}"
                    assert list(pool.map(call, range(sent, sent + 8))) == [200] * 8
                    sent += 8
            pids = worker_pids(Path(directory))
            assert sum(served(Path(directory), pid) for pid in pids) == sent

            samples = totals(gw.url)
            assert value(samples, "http_requests_total", path="/v1/responses", method="POST") == sent
            assert value(samples, "http_request_duration_seconds_count", path="/v1/responses") == sent
            assert value(samples, "provider_requests_total", provider="openai", status="success") == sent
            assert value(samples, "provider_tokens_total", type="input") == sent * 11
            assert value(samples, "provider_stream_duration_seconds_count") == sent / 2
            assert value(samples, "conversation_operations_total", operation="create", status="success") == sent
            assert value(samples, "provider_cost_usd_total") == pytest.approx(sent * (11 * 0.15 + 7 * 0.6) / 1e6)
            assert value(samples, "conversation_active_count", backend="postgres") == sent

            # A worker killed outright: the master's child_exit hook cleans up after it, its
            # counts stay in the totals, and the replacement worker adds to them.
            victim = next(iter(pids))
            os.kill(victim, signal.SIGKILL)
            for _ in range(4):
                assert requests.get(f"{gw.base_url}/models", timeout=10).status_code == 200
            samples = totals(gw.url)
            assert value(samples, "http_requests_total", path="/v1/responses", method="POST") == sent
            assert value(samples, "http_requests_total", path="/v1/models") == 4


def test_one_scrape_sums_the_database_families_of_every_worker(fake_openai):
    db = {"alias": "default", "vendor": "postgresql"}
    with tempfile.TemporaryDirectory(prefix="obs-multiproc-") as directory:
        gw = GatewayProcess(gateway_yaml(fake_openai.url, log_level="warn"), workers=2,
                            env={"PROMETHEUS_MULTIPROC_DIR": directory})
        with gw:
            def call(index: int) -> int:
                body = {"model": "gpt-test", "input": f"hi {index}"}
                return requests.post(f"{gw.base_url}/responses", json=body, timeout=30).status_code

            # Both workers up (each renews its lease as soon as it has booted): on a loaded machine
            # the second can still be starting when the first already answers /health.
            def booted() -> int:
                return sum(1 for pid in worker_pids(Path(directory))
                           if value(worker_totals(Path(directory), pid), "django_db_execute_total", **db) > 0)

            deadline = time.monotonic() + 30
            while booted() < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            with ThreadPoolExecutor(max_workers=8) as pool:
                assert list(pool.map(call, range(N))) == [200] * N
            # Read before the scrape: the scrape's own query (the active-conversations gauge)
            # runs after it has collected the files.
            workers = {pid: worker_totals(Path(directory), pid) for pid in worker_pids(Path(directory))}
            samples = totals(gw.url)

    # Each turn inserts one conversation and one response, whichever worker stored it.
    assert value(samples, "django_model_inserts_total", model="conversation") == N
    assert value(samples, "django_model_inserts_total", model="stored_response") == N
    # Both workers ran queries, and the one scrape shows their sum, every query timed.
    executed = {pid: value(w, "django_db_execute_total", **db) for pid, w in workers.items()}
    assert sum(1 for count in executed.values() if count > 0) >= 2, f"one worker served everything: {executed}"
    total = value(samples, "django_db_execute_total", **db)
    assert total == sum(executed.values())
    assert total >= N  # at least the statement that writes each turn (conversations_app.turn_statements)
    assert value(samples, "django_db_query_duration_seconds_count", **db) == total
    assert value(samples, "django_db_new_connections_total", **db) == sum(
        value(w, "django_db_new_connections_total", **db) for w in workers.values())


def test_metrics_path_is_404_under_gunicorn_when_metrics_are_off(fake_openai):
    with GatewayProcess(gateway_yaml(fake_openai.url, metrics=False), workers=2) as gw:
        assert requests.get(f"{gw.url}/metrics", timeout=10).status_code == 404
