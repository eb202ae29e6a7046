"""The WSGI entry point gunicorn serves: Django, wrapped so chunked request bodies reach it and so a
stream can write keep-alives while its request waits on the upstream (direct_writes)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from gateway_project.chunked_body import with_chunked_bodies
from gateway_project.direct_writes import with_direct_writes

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

application = with_direct_writes(with_chunked_bodies(get_wsgi_application()))
