"""The admin's middlewares (static files, sessions, CSRF, the logged-in user, messages) run on every
path but the API's: API requests skip them, the admin keeps all of them, CSRF check included, and
a settings file that drops them fails `manage.py check`."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory, override_settings

from gateway_project.middleware.admin_only import AdminOnlyMiddleware, check_admin_middleware

ADMIN_ONLY = "gateway_project.middleware.admin_only.AdminOnlyMiddleware"


def what_the_view_saw(path: str) -> set[str]:
    seen: set[str] = set()

    def view(request: HttpRequest) -> HttpResponse:
        seen.update(name for name in ("session", "user", "_messages", "csrf_processing_done") if hasattr(request, name))
        return HttpResponse("ok")

    AdminOnlyMiddleware(view)(RequestFactory().get(path))
    return seen


def test_api_requests_skip_the_admin_middlewares() -> None:
    assert what_the_view_saw("/v1/responses") == set()
    assert what_the_view_saw("/v1") == set()


@pytest.mark.parametrize("path", ["/admin/", "/health", "/nowhere", "/v1x/responses"])
def test_every_other_path_runs_them(path: str) -> None:
    assert {"session", "user", "_messages"} <= what_the_view_saw(path)


def test_static_files_are_still_served_by_whitenoise() -> None:
    response = AdminOnlyMiddleware(lambda request: HttpResponse("the view"))(
        RequestFactory().get("/static/admin/css/base.css"))
    assert response.status_code == 200 and b"the view" not in b"".join(response)


@pytest.mark.django_db
def test_the_admin_still_checks_csrf_and_logs_in() -> None:
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    strict = Client(enforce_csrf_checks=True)
    refused = strict.post("/admin/login/", {"username": "admin", "password": "pw"})
    assert refused.status_code == 403  # CsrfViewMiddleware.process_view ran
    page = strict.get("/admin/login/")
    token = page.cookies["csrftoken"].value
    logged_in = strict.post("/admin/login/?next=/admin/", {"username": "admin", "password": "pw",
                                                           "csrfmiddlewaretoken": token})
    assert logged_in.status_code == 302 and logged_in.headers["Location"] == "/admin/"
    assert strict.get("/admin/").status_code == 200  # the session and the user, from the cookie


@pytest.mark.django_db
def test_api_answers_keep_the_headers_of_the_middlewares_around_it(api) -> None:
    response = api.client.get("/v1/responses/resp_missing")
    assert response.status_code == 404
    assert response.headers["Content-Length"] == str(len(response.content))  # CommonMiddleware
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Set-Cookie" not in response.headers and "Cookie" not in response.headers.get("Vary", "")


def test_the_check_passes_with_the_settings_as_shipped() -> None:
    assert check_admin_middleware() == []


def test_the_check_fails_without_the_admin_middlewares() -> None:
    from django.conf import settings

    without = [path for path in settings.MIDDLEWARE if path != ADMIN_ONLY]
    with override_settings(MIDDLEWARE=without):
        assert [error.id for error in check_admin_middleware()] == ["gateway.E001"] * 4
    misordered = ["django.contrib.auth.middleware.AuthenticationMiddleware",
                  "django.contrib.sessions.middleware.SessionMiddleware",
                  "django.middleware.csrf.CsrfViewMiddleware",
                  "django.contrib.messages.middleware.MessageMiddleware"]
    with override_settings(ADMIN_MIDDLEWARE=misordered):
        assert [error.id for error in check_admin_middleware()] == ["gateway.E002"]
