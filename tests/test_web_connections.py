"""A web process keeps its database connection between requests and skips the per-request
health check while the connection was checked a moment ago and its socket is quiet."""

from __future__ import annotations

import time

import pytest
from django.db import close_old_connections, connection

from accounts import tenancy
from config import middleware

pytestmark = pytest.mark.django_db(transaction=True)


def _request_starts() -> None:
    # What request_started runs in a server: Django's close_old_connections, then ours.
    close_old_connections()
    middleware._connections_health_check_defer()


def _fresh_connection() -> None:
    connection.ensure_connection()
    if hasattr(connection, "health_checked_at"):
        del connection.health_checked_at


def test_a_busy_web_process_skips_the_health_check_until_it_is_due_again(monkeypatch):  # type: ignore[no-untyped-def]
    clock = [1000.0]
    monkeypatch.setattr(tenancy.time, "monotonic", lambda: clock[0])
    _fresh_connection()

    _request_starts()
    assert connection.health_check_done is False  # the first request after a while checks
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")

    clock[0] += 1
    _request_starts()
    assert connection.health_check_done is True  # one second later, nothing on the socket: trusted
    raw = connection.connection

    clock[0] += tenancy.HEALTH_CHECK_SECONDS
    _request_starts()
    assert connection.health_check_done is False  # due again
    assert connection.connection is raw


def test_a_connection_the_server_ended_is_checked_and_replaced_not_trusted(monkeypatch):  # type: ignore[no-untyped-def]
    clock = [1000.0]
    monkeypatch.setattr(tenancy.time, "monotonic", lambda: clock[0])
    _fresh_connection()
    _request_starts()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    broken = connection.connection
    other = connection.copy()
    with other.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    other.close()
    deadline = time.monotonic() + 5
    while tenancy._socket_quiet(broken) and time.monotonic() < deadline:
        time.sleep(0.01)

    clock[0] += 1  # within the window, but the server said goodbye on the socket
    _request_starts()

    assert connection.health_check_done is False
    with connection.cursor() as cursor:  # Django's check finds it broken and connects again
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert connection.connection is not broken
