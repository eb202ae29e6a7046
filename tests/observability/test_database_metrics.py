"""django-prometheus's families on the gateway's metrics endpoint: every query counted and timed
(its database backends), and row writes counted per model (its model mixin)."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, connections, transaction

from identity_app.keys import issue_key
from tests.observability.conftest import sample
from tests.observability.test_metrics import scrape

DB = {"alias": "default", "vendor": "postgresql"}

# Family (as the parser names it: counters without `_total`) -> (type, label names).
EXPECTED = {
    "django_db_new_connections": ("counter", {"alias", "vendor"}),
    "django_db_execute": ("counter", {"alias", "vendor"}),
    "django_db_query_duration_seconds": ("histogram", {"alias", "vendor"}),
    "django_model_inserts": ("counter", {"model"}),
    "django_model_updates": ("counter", {"model"}),
    "django_model_deletes": ("counter", {"model"}),
}
MODELS = {"conversation", "stored_response", "item", "api_key", "worker_lease"}


def test_the_gateway_runs_on_django_prometheus_database_backends_with_the_pool(db):
    default = connections["default"]
    from django_prometheus.db.backends.postgresql.base import DatabaseWrapper

    assert isinstance(default, DatabaseWrapper)  # the gateway's backend subclasses django-prometheus's
    default.ensure_connection()
    # The connection came from Django's pool (settings.py sets OPTIONS["pool"]), and the pool's
    # connections make the exporting cursors: the wrapper passes its cursor_factory to the pool.
    assert default.pool.get_stats()["requests_num"] >= 1
    with default.cursor() as cursor:
        assert type(cursor.cursor).__module__ == "django_prometheus.db.common"


def test_storing_a_turn_counts_and_times_its_queries_and_inserts(client):
    executed, timed = sample("django_db_execute_total", **DB), sample("django_db_query_duration_seconds_count", **DB)
    conversations = sample("django_model_inserts_total", model="conversation")
    responses = sample("django_model_inserts_total", model="stored_response")

    first = client.create(model="gpt-test", input="hi").json()
    queries = sample("django_db_execute_total", **DB) - executed
    # At least the conversation, the response and its items are written.
    assert queries >= 3
    assert sample("django_db_query_duration_seconds_count", **DB) - timed == queries
    assert sample("django_model_inserts_total", model="conversation") == conversations + 1
    assert sample("django_model_inserts_total", model="stored_response") == responses + 1

    # A follow-up turn joins the conversation: a new response row, no new conversation row.
    client.create(model="gpt-test", input="again", previous_response_id=first["id"])
    assert sample("django_model_inserts_total", model="conversation") == conversations + 1
    assert sample("django_model_inserts_total", model="stored_response") == responses + 2


def test_issuing_an_api_key_counts_an_insert(db):
    before = sample("django_model_inserts_total", model="api_key")
    issue_key(name="ci", owner="team-a")
    assert sample("django_model_inserts_total", model="api_key") == before + 1


def test_a_failed_query_is_counted_by_error_type(db):
    labels = {**DB, "type": "UndefinedTable"}
    before = sample("django_db_errors_total", **labels)
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM no_such_table")
    assert sample("django_db_errors_total", **labels) == before + 1


def test_the_database_and_model_families_are_on_the_metrics_endpoint(client):
    client.create(model="gpt-test", input="hi")
    families = scrape(client)
    for name, (kind, labels) in EXPECTED.items():
        family = families.get(name)
        assert family is not None, f"{name} missing"
        assert family.type == kind, name
        samples = [s for s in family.samples if not s.name.endswith(("_created", "_bucket"))]
        assert samples, f"{name} has no samples"
        assert {k for k in samples[0].labels if k != "le"} == labels, name
    buckets = {s.labels["le"] for s in families["django_db_query_duration_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["alias"] == "default"}
    assert {"0.0005", "0.005", "10.0", "+Inf"} <= buckets, "milliseconds, not django-prometheus's 10 ms floor"
    [executed] = [s.value for s in families["django_db_execute"].samples
                  if s.name == "django_db_execute_total" and s.labels == DB]
    assert executed > 0
    # Every instrumented model is listed from the start, at zero until it is written.
    for name in ("django_model_inserts", "django_model_updates", "django_model_deletes"):
        listed = {s.labels["model"] for s in families[name].samples if s.name.endswith("_total")}
        assert listed >= MODELS, name
