"""Clinic isolation in the database: PostgreSQL row-level security underneath app scoping.

Two paths, both explicit:

- Tenant path (the clinic API, FHIR and the MCP server). Each request or tool call is one
  unit of work (`tenant_work`: TenantTransactionMiddleware, agents.server). The caller's access
  token is checked on the system connection, outside any transaction; once it is known,
  `tenant_scope_enter` opens the work's one transaction on this thread's *API connection*,
  which logs in as the API role (accounts.database_roles: no superuser, no BYPASSRLS, a member
  of `scriptline_tenant` only, no grant on staff, session, OTP or OAuth tables), sets
  `app.clinic_id`, and stands in as Django's "default" connection until the work ends, so the
  ORM and raw SQL alike run as that role. `RESET ROLE` there leads back to the API role
  itself: nothing in a request can reach the system role's privileges. The policies (patients
  migration 0004) show only rows of that clinic; they ignore the '*' value, so a tenant cannot
  widen its own scope. After the work the system connection is "default" again, before the
  commit's on_commit callbacks run (they publish on the system path).
  With API_LOGIN_CONNECTION off (unit tests, whose data lives in a transaction another
  connection cannot see), the work is one transaction on the system connection narrowed with
  `SET LOCAL ROLE scriptline_tenant` instead: the same privileges, but not a login.
- System path (workers, admin, management commands, migrations). These run as the
  connection's own role, which (with FORCE ROW LEVEL SECURITY) sees rows only while
  `app.clinic_id = '*'`. `system_scope_install` sets that on each new system connection and
  logs it once per process, so the system path is a single, visible decision rather than a
  side effect of being the table owner.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import load_backend
from django.http import HttpRequest, HttpResponse
from psycopg.pq import TransactionStatus

from config.celery import HEALTH_CHECK_SECONDS

logger = logging.getLogger(__name__)

TENANT_ROLE = "scriptline_tenant"
SYSTEM_SCOPE = "*"
API_PREFIX = "/api/v1/"
# The clinic-facing prefixes that run on the tenant path: the REST API and FHIR.
TENANT_PREFIXES = (API_PREFIX, "/fhir/")
# This thread's connection as the API login role, registered under this alias beside "default".
API_ALIAS = "api"
# What the API connection may take from DATABASE_API_URL; the database is always the system
# connection's own (the roles and grants live there).
_API_URL_KEYS = ("USER", "PASSWORD", "HOST", "PORT", "CONN_MAX_AGE", "OPTIONS")

_system_scope_logged = False
_api = threading.local()


class TenantWork:
    """One clinic-facing unit of work: a request to the API or FHIR, or an MCP tool call."""

    def __init__(self, *, api_login: bool) -> None:
        self.api_login = api_login
        self._atomic: Any = None
        self._system: BaseDatabaseWrapper | None = None
        self._failed = False

    def fail(self) -> None:
        """Roll the work's changes back when it ends (a refusal that keeps nothing)."""
        self._failed = True
        if not self.api_login:
            transaction.set_rollback(True)

    def _open(self, *, clinic_id: int) -> None:
        if self._atomic is not None:
            raise RuntimeError("a unit of work acts for one clinic only")
        system = connections[DEFAULT_DB_ALIAS]
        if system.in_atomic_block:
            # The API connection could not see what that transaction wrote, nor undo it.
            raise RuntimeError("the clinic's transaction cannot start inside one on the system connection")
        api = api_connection()
        api.close_if_unusable_or_obsolete()
        connection_health_check_defer(api)
        atomic = transaction.atomic(using=API_ALIAS)
        atomic.__enter__()
        self._atomic, self._system = atomic, system
        connections[DEFAULT_DB_ALIAS] = api
        with api.cursor() as cursor:
            cursor.execute("SELECT set_config('app.clinic_id', %s, true)", [str(int(clinic_id))])

    def _close(self, error: BaseException | None) -> None:
        if self._atomic is None or self._system is None:
            return
        api = connections[API_ALIAS]
        # The system connection first: the commit's on_commit callbacks run on the system path.
        connections[DEFAULT_DB_ALIAS] = self._system
        try:
            if self._failed and error is None:
                transaction.set_rollback(True, using=API_ALIAS)
            self._atomic.__exit__(
                type(error) if error else None, error, error.__traceback__ if error else None
            )
        finally:
            self._atomic = self._system = None
            api.close_if_unusable_or_obsolete()


_work: ContextVar[TenantWork | None] = ContextVar("tenant_work", default=None)


@contextmanager
def tenant_work() -> Iterator[TenantWork]:
    """The unit of work a clinic-facing request or tool call runs in (see the module doc)."""
    work = TenantWork(api_login=settings.API_LOGIN_CONNECTION)
    token = _work.set(work)
    try:
        if work.api_login:
            try:
                yield work
            except BaseException as error:
                work._close(error)
                raise
            work._close(None)
        else:
            try:
                with transaction.atomic():
                    yield work
            finally:
                if connection.in_atomic_block:
                    # Only under an enclosing transaction (tests): SET LOCAL would outlive the work.
                    tenant_scope_leave()
    finally:
        _work.reset(token)


def api_connection() -> BaseDatabaseWrapper:
    """This thread's connection logged in as the API role, made on first use and kept (its
    CONN_MAX_AGE and health checks are the system connection's unless DATABASE_API_URL says).
    Kept per thread, as Django keeps its own, and registered under API_ALIAS."""
    wanted = api_connection_settings(connections[DEFAULT_DB_ALIAS].settings_dict)
    api: BaseDatabaseWrapper | None = getattr(_api, "connection", None)
    if api is None or api.settings_dict != wanted:
        if api is not None:
            api.close()
        api = load_backend(wanted["ENGINE"]).DatabaseWrapper(wanted, API_ALIAS)
        _api.connection = api
    connections[API_ALIAS] = api
    return api


def connection_health_check_defer(wrapper: Any) -> None:
    """Right after Django's close_if_unusable_or_obsolete (each request's start): spare a
    connection its `SELECT 1` health check when one passed less than HEALTH_CHECK_SECONDS ago
    (as a worker does between tasks) and nothing has arrived on its socket since.

    A server that ends a session (a restart, pg_terminate_backend, an idle timeout, a pooler
    closing it) says so on the socket, which then polls readable: such a connection, or one
    due again, is checked by Django on its first query as before, and replaced if broken.
    `wrapper` is Django's connection wrapper (health_check_done is not in its type stubs)."""
    raw = wrapper.connection
    if (
        raw is None
        or not wrapper.health_check_enabled
        or wrapper.health_check_done
        or wrapper.in_atomic_block
    ):
        return
    now = time.monotonic()
    checked_at = getattr(wrapper, "health_checked_at", None)
    if checked_at is not None and now - checked_at < HEALTH_CHECK_SECONDS and _socket_quiet(raw):
        wrapper.health_check_done = True
    else:
        # Django checks it on its first query; trust it for HEALTH_CHECK_SECONDS after that.
        wrapper.health_checked_at = now


def _socket_quiet(raw: Any) -> bool:
    """An idle psycopg connection with nothing to read: no error, notice or end of stream."""
    try:
        if raw.closed or raw.broken or raw.info.transaction_status != TransactionStatus.IDLE:
            return False
        poller = select.poll()
        poller.register(raw.fileno(), select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError, AttributeError):
        return False


def api_connection_settings(system: dict[str, Any]) -> dict[str, Any]:
    configured = settings.DATABASE_API
    return {
        **system,
        # A URL without a host, port or options keeps the system connection's.
        **{key: configured[key] for key in _API_URL_KEYS if configured.get(key) not in (None, "", {})},
        "ATOMIC_REQUESTS": False,
        "TEST": {},
    }


def tenant_scope_enter(*, clinic_id: int) -> None:
    """Narrow the current unit of work to one clinic: on the API connection (tenant_work), or
    as the RLS-bound tenant role within the current transaction."""
    work = _work.get()
    if work is not None and work.api_login:
        work._open(clinic_id=clinic_id)
        return
    if not connection.in_atomic_block:
        # Outside a transaction SET LOCAL would be a silent no-op: refuse rather than leak.
        raise RuntimeError("tenant_scope_enter needs the request's transaction")
    # set_config(..., true) is SET LOCAL: both end with the transaction. One round trip.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('role', %s, true), set_config('app.clinic_id', %s, true)",
            [TENANT_ROLE, str(int(clinic_id))],
        )


def tenant_scope_leave() -> None:
    """Back to the connection's role and the system scope, inside a transaction that goes on."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('role', 'none', true), set_config('app.clinic_id', %s, true)", [SYSTEM_SCOPE]
        )


def system_scope_install(sender: Any, connection: Any, **kwargs: Any) -> None:
    """connection_created receiver: non-request work runs on the audited system path."""
    global _system_scope_logged
    if connection.vendor != "postgresql" or connection.alias == API_ALIAS:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('app.clinic_id', %s, false)", [SYSTEM_SCOPE])
    if not _system_scope_logged:
        _system_scope_logged = True
        logger.info("database connections use the system scope; API requests narrow to one clinic")


@contextmanager
def system_scope(*, reason: str) -> Iterator[None]:
    """Mark a block of cross-clinic work (a command, an admin action) in the log."""
    logger.info("system scope: %s", reason)
    yield


class TenantTransactionMiddleware:
    """Run each clinic-API request as one unit of work (tenant_work), rolled back unless it
    succeeded or the refusal keeps what it recorded (DomainError(keeps_changes=True), see
    common.errors)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(TENANT_PREFIXES):
            return self.get_response(request)
        with tenant_work() as work:
            response = self.get_response(request)
            if response.status_code >= 400 and not getattr(response, "keeps_changes", False):
                work.fail()
        return response
