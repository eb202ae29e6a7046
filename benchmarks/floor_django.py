"""Django with no middleware and one view answering floor_apps.ANSWER: the framework's own cost per
request, for `floor.py`. This module is its settings, its URLconf and its WSGI app at once."""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from benchmarks.floor_apps import ANSWER

SECRET_KEY = "floor-benchmark-only"  # noqa: S105 - nothing is signed
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = __name__
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
USE_TZ = True


@csrf_exempt
def answer(request: HttpRequest) -> HttpResponse:
    request.body  # noqa: B018 - read, as every API view reads it
    return HttpResponse(ANSWER, content_type="application/json")


urlpatterns = [path("v1/responses", answer)]

os.environ["DJANGO_SETTINGS_MODULE"] = __name__  # this module, whatever the environment names

from django.core.wsgi import get_wsgi_application  # noqa: E402 - after the settings module is named

application = get_wsgi_application()
