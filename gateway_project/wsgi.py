"""The WSGI entry point gunicorn serves: Django, wrapped so chunked request bodies reach it."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from gateway_project.chunked_body import with_chunked_bodies

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

application = with_chunked_bodies(get_wsgi_application())
