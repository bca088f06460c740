"""Clinic isolation in the database: PostgreSQL row-level security underneath app scoping.

Two paths, both explicit:

- Tenant path (the clinic API). Every /api/v1/ and /fhir/ request runs in one transaction
  (TenantTransactionMiddleware); once the caller is authenticated, `tenant_scope_enter`
  switches that transaction to the role `scriptline_tenant` (no superuser, no BYPASSRLS,
  owns nothing) and sets `app.clinic_id`. The role's policies (patients migration 0004)
  show only rows of that clinic, whatever the query asks for; it ignores the '*' value, so
  a tenant cannot widen its own scope.
- System path (workers, admin, management commands, migrations). These run as the
  connection's own role, which (with FORCE ROW LEVEL SECURITY) sees rows only while
  `app.clinic_id = '*'`. `system_scope_install` sets that on each new connection and logs
  it once per process, so the system path is a single, visible decision rather than a side
  effect of being the table owner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

TENANT_ROLE = "scriptline_tenant"
SYSTEM_SCOPE = "*"
API_PREFIX = "/api/v1/"
# The clinic-facing prefixes that run on the tenant path: the REST API and FHIR.
TENANT_PREFIXES = (API_PREFIX, "/fhir/")

_system_scope_logged = False


def tenant_scope_enter(*, clinic_id: int) -> None:
    """Narrow the current transaction to one clinic, as the RLS-bound tenant role."""
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
    if connection.vendor != "postgresql":
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
    """Run each clinic-API request in one transaction, rolled back unless it succeeded or the
    refusal keeps what it recorded (DomainError(keeps_changes=True), see common.errors)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(TENANT_PREFIXES):
            return self.get_response(request)
        with transaction.atomic():
            response = self.get_response(request)
            if response.status_code >= 400 and not getattr(response, "keeps_changes", False):
                transaction.set_rollback(True)
        if connection.in_atomic_block:
            # Only under an enclosing transaction (tests): SET LOCAL would outlive the request.
            tenant_scope_leave()
        return response
