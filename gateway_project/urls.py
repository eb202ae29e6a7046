from django.contrib import admin
from django.urls import include, path

from gateway_project import error_views

urlpatterns = [
    path("", include("responses_app.urls")),
    path("admin/", admin.site.urls),
]

# Unknown URLs and crashes on API paths answer with an OpenAI error body, never an HTML page.
handler404 = error_views.not_found
handler500 = error_views.server_error
