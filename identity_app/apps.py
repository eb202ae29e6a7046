from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


def _key_changed(**_: Any) -> None:
    # This process forgets the keys it remembers now; the others when the change commits (key_cache).
    from identity_app.key_cache import forget_keys

    forget_keys()


class IdentityAppConfig(AppConfig):
    name = "identity_app"
    verbose_name = "Identity: API keys"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from identity_app.models import ApiKey

        post_save.connect(_key_changed, sender=ApiKey, dispatch_uid="identity_app.key_changed")
        post_delete.connect(_key_changed, sender=ApiKey, dispatch_uid="identity_app.key_deleted")
