"""An unavailable database is a 503 the client should retry, not a 500 (gateway_project.middleware.errors)."""

from __future__ import annotations

import logging

import pytest
from django.db import InterfaceError, OperationalError
from django.test import RequestFactory

from conversations_app.store import store
from gateway_project import error_views


@pytest.mark.parametrize("error", [OperationalError("couldn't get a connection after 1.50 sec"),
                                   InterfaceError("connection already closed")])
def test_a_database_error_on_an_api_path_is_a_503_with_retry_after(api, monkeypatch, caplog, error):
    def unavailable(*args, **kwargs):
        raise error

    monkeypatch.setattr(store, "get_response", unavailable)
    with caplog.at_level(logging.INFO):
        response = api.get("/v1/responses/resp_1")
    assert response.status_code == 503
    assert response.json() == {"error": {"message": "The gateway's database is unavailable. Retry shortly.",
                                         "type": "server_error", "param": None, "code": "database_unavailable"}}
    assert response["Retry-After"] == "1"
    assert "x-should-retry" not in response
    # One warning line, no traceback, and not Django's own "Service Unavailable" error line on top.
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.levelname) for r in records] == [("gateway_project.middleware.errors", "WARNING")]
    assert records[0].exc_info is None
    assert f"{type(error).__name__}: {error}" in records[0].getMessage()


def test_other_errors_stay_500(api, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(store, "get_response", broken)
    response = api.get("/v1/responses/resp_1")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"


def test_the_500_handler_also_turns_a_database_error_from_a_middleware_into_a_503():
    request = RequestFactory().get("/v1/responses")
    try:
        raise OperationalError("connection refused")
    except OperationalError:
        response = error_views.server_error(request)
    assert response.status_code == 503
    assert response["Retry-After"] == "1"


def test_a_pool_that_stays_busy_is_said_to_be_busy_not_down(api, monkeypatch):
    from gateway_project.db_backends.postgresql.base import PoolBusy

    def busy(*args, **kwargs):
        try:
            raise PoolBusy("every pooled connection stayed busy for 10 s")
        except PoolBusy as cause:
            raise OperationalError(*cause.args) from cause  # as Django wraps driver errors

    monkeypatch.setattr(store, "get_response", busy)
    response = api.get("/v1/responses/resp_1")
    assert response.status_code == 503 and response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "database_busy"
