"""The gateway's metric families hand out a labelled child from a dict (observability.metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from gateway_project.observability.metrics import Counter, Histogram


def test_the_same_values_give_the_same_child_and_count_in_one_series():
    registry = CollectorRegistry()
    counter = Counter("children_test_total", "test", ["status"], registry=registry)
    first = counter.labels("200")
    assert counter.labels("200") is first
    counter.labels("200").inc()
    counter.labels(200).inc()  # what prometheus_client writes as "200": the same series
    counter.labels(status="200").inc()  # named values take prometheus_client's own path
    text = generate_latest(registry).decode()
    assert 'children_test_total{status="200"} 3.0' in text


def test_unhashable_values_still_work_as_prometheus_client_makes_them_strings():
    registry = CollectorRegistry()
    histogram = Histogram("children_test_seconds", "test", ["path"], registry=registry, buckets=(1,))
    histogram.labels(["a"]).observe(0.5)
    histogram.labels(["a"]).observe(0.5)
    assert "children_test_seconds_count{path=\"['a']\"} 2.0" in generate_latest(registry).decode()
