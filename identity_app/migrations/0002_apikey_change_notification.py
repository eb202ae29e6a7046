"""A trigger that tells every gateway process when a key is revoked or changed (identity_app.key_cache).

Postgres only: elsewhere keys are not remembered between requests, so there is nobody to tell.
A statement-level trigger, so a bulk revocation sends one notification; `UPDATE OF` lists the
columns that decide whether and as whom a key authenticates, so recording `last_used_at` (once a
minute per key) does not make every worker forget.
"""

from typing import Any

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION identity_app_apikey_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gateway_api_keys', '');
    RETURN NULL;
END $$;
CREATE TRIGGER identity_app_apikey_changed
    AFTER UPDATE OF key_hash, owner, allowed_models, rpm, tpm, revoked_at OR DELETE OR TRUNCATE
    ON identity_app_apikey FOR EACH STATEMENT EXECUTE FUNCTION identity_app_apikey_changed();
"""

DROP = """
DROP TRIGGER IF EXISTS identity_app_apikey_changed ON identity_app_apikey;
DROP FUNCTION IF EXISTS identity_app_apikey_changed();
"""


def create(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("identity_app", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
