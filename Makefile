.PHONY: run test migrate

# Start the gateway on 127.0.0.1:8080 (SQLite and in-process defaults unless DATABASE_URL/REDIS_URL are set).
run:
	scripts/run

# The whole test suite, against the local Postgres and Redis.
test:
	scripts/test

migrate:
	scripts/bootstrap && . scripts/local-env && .venv/bin/python manage.py migrate
