"""Routes of the surfaces beside the Responses API (see the package's docstring)."""

from django.urls import URLPattern, path  # noqa: F401

urlpatterns: list[URLPattern] = [
]
