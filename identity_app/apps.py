from django.apps import AppConfig


class IdentityAppConfig(AppConfig):
    name = "identity_app"
    verbose_name = "Identity: API keys"
    default_auto_field = "django.db.models.BigAutoField"
