"""The middlewares only the admin's pages need (its static files, sessions, CSRF, the logged-in
user, messages), run on every path but the API's.

An API request (`/v1/...`) authenticates with its key (AuthMiddleware), its views are CSRF-exempt,
and nothing on it reads a session, a Django user or a message. Yet each of these middlewares did
its part on every API request: WhiteNoise looked the path up among the static files, the session
and message storages were built and asked at the response whether they had been used, the CSRF
middleware read the cookie. About 4 % of a small request's CPU (issue 13, the pinned profile).

Here they form a chain of their own behind one entry of MIDDLEWARE (settings.ADMIN_MIDDLEWARE, in
the order Django would run them), built as Django builds its own (each layer converting
exceptions to responses), and their `process_view` hooks (the CSRF check) run where this entry
stands. Every other path, an unknown one included, goes through all of them as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponseBase
from django.utils.module_loading import import_string

from gateway_project.middleware.errors import is_api_path

GetResponse = Callable[[HttpRequest], HttpResponseBase]
ViewHook = Callable[[HttpRequest, Callable[..., Any], tuple[Any, ...], dict[str, Any]], HttpResponseBase | None]


class AdminOnlyMiddleware:
    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        chain = get_response
        view_hooks: list[ViewHook] = []
        for path in reversed(settings.ADMIN_MIDDLEWARE):
            middleware = import_string(path)(chain)
            if hasattr(middleware, "process_exception") or hasattr(middleware, "process_template_response"):
                # Django would register these hooks; this chain does not, so say so instead of
                # silently skipping them.
                raise ImproperlyConfigured(f"{path} has hooks AdminOnlyMiddleware does not run; list it in MIDDLEWARE")
            if hasattr(middleware, "process_view"):
                view_hooks.insert(0, middleware.process_view)
            chain = cast(GetResponse, convert_exception_to_response(middleware))  # a sync chain
        self.admin_chain = chain
        self.view_hooks = tuple(view_hooks)

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if is_api_path(request.path_info):
            return self.get_response(request)
        return self.admin_chain(request)

    def process_view(self, request: HttpRequest, view: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> HttpResponseBase | None:
        if is_api_path(request.path_info):
            return None
        for hook in self.view_hooks:
            response = hook(request, view, args, kwargs)
            if response is not None:
                return response
        return None


# What the admin's own checks (admin.E408-E410) and the deploy check's security.W003 require, in the
# order they require it; silenced in settings, since they look in MIDDLEWARE only.
_ADMIN_NEEDS = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
)


@checks.register(checks.Tags.admin)
def check_admin_middleware(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The admin's middlewares are where it needs them: in MIDDLEWARE, or in ADMIN_MIDDLEWARE with
    AdminOnlyMiddleware in MIDDLEWARE to run them."""
    here = f"{__name__}.{AdminOnlyMiddleware.__name__}"
    chain = list(getattr(settings, "ADMIN_MIDDLEWARE", [])) if here in settings.MIDDLEWARE else []
    errors: list[checks.CheckMessage] = []
    for path in _ADMIN_NEEDS:
        if path not in settings.MIDDLEWARE and path not in chain:
            errors.append(checks.Error(f"{path!r} must be in MIDDLEWARE, or in ADMIN_MIDDLEWARE with {here!r} in "
                                       "MIDDLEWARE, for the admin to work.", id="gateway.E001"))
    positions = [chain.index(path) for path in _ADMIN_NEEDS if path in chain]
    if positions != sorted(positions):
        errors.append(checks.Error(f"ADMIN_MIDDLEWARE must list {', '.join(_ADMIN_NEEDS)} in this order.",
                                   id="gateway.E002"))
    return errors
