from django.apps import AppConfig


class ResponsesAppConfig(AppConfig):
    name = "responses_app"
    verbose_name = "Responses API"

    def ready(self) -> None:
        # Registers its system check, which `manage.py check` runs without loading any middleware.
        from gateway_project.middleware import admin_only  # noqa: F401
