from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from gateway_project import error_views
from gateway_project.observability.views import metrics_view

urlpatterns = [
    path("", include("responses_app.urls")),
    path("", include("conversations_app.urls")),
    path("", include("surfaces_app.urls")),
    path("admin/", admin.site.urls),
    # The view itself answers 404 while metrics are switched off.
    path(settings.GATEWAY.observability.metrics.path.lstrip("/"), metrics_view, name="metrics"),
]

# Unknown URLs and crashes on API paths answer with an OpenAI error body, never an HTML page.
handler400 = error_views.bad_request
handler404 = error_views.not_found
handler500 = error_views.server_error
