import pytest
from django.db import connection


@pytest.mark.django_db
def test_it_runs_against_postgres():
    assert connection.vendor == "postgresql"
