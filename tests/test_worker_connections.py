"""A worker keeps its database connection between tasks and health-checks it only now and then."""

from __future__ import annotations

import pytest
from django.db import connection

from config import celery as celery_config

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_busy_worker_skips_the_health_check_until_it_is_due_again(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(celery_config.time, "monotonic", lambda: clock[0])
    connection.ensure_connection()
    if hasattr(connection, "health_checked_at"):
        del connection.health_checked_at

    celery_config._connections_tidy()
    assert connection.health_check_done is False  # the first task after a while checks

    clock[0] += 1
    celery_config._connections_tidy()
    assert connection.health_check_done is True  # one second later: trusted
    raw = connection.connection

    clock[0] += celery_config.HEALTH_CHECK_SECONDS
    celery_config._connections_tidy()
    assert connection.health_check_done is False  # due again
    assert connection.connection is raw  # and still the same connection


def test_a_connection_that_had_an_error_is_checked_and_replaced_when_broken(monkeypatch):
    connection.ensure_connection()
    celery_config._connections_tidy()
    broken = connection.connection
    broken.close()
    connection.errors_occurred = True

    celery_config._connections_tidy()

    assert connection.connection is None or connection.connection is not broken
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
