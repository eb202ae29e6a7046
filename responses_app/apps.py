from django.apps import AppConfig


class ResponsesAppConfig(AppConfig):
    name = "responses_app"
    verbose_name = "Responses API"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from gateway_project import db_pool

        # Every API call goes through the pool; see gateway_project/db_pool.py for why it sweeps.
        connection_created.connect(db_pool.on_connection_created, dispatch_uid="gateway-db-pool-sweep")
