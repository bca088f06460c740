"""The database roles of the clinic API, and exactly what each may touch.

- `scriptline_tenant` (NOLOGIN) holds the API's privileges and is the role the row-level
  security policies name (patients migration 0004). Clinic-API transactions switch to it.
- The API login role (`scriptline_api`, or the user of `DATABASE_API_URL`) logs in *as* the
  restricted role: it is a member of `scriptline_tenant` and of nothing else, with no
  superuser, BYPASSRLS, CREATEROLE or CREATEDB. `RESET ROLE` on its connection leaves it
  where it was; `SET ROLE` to the system role is refused.
- Clinic-facing requests (API, FHIR, MCP) run on a connection that logs in as the API role
  (accounts.tenancy.tenant_work).
- Workers, the admin, commands and migrations use the system role (the connection's own).

The privileges are an allow-list applied after every `migrate` (a post_migrate receiver), so
a table added later gets nothing until it is listed here: clinic data (under row-level
security) may be read and written, reference data (formulary, charge rates) only read, and
the staff, session, one-time-password, OAuth and lockout tables not at all. Access tokens
are verified on the system path before the transaction narrows (accounts.authentication).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from psycopg import sql

logger = logging.getLogger(__name__)

TENANT_ROLE = "scriptline_tenant"
API_LOGIN_ROLE = "scriptline_api"

READ_WRITE = "SELECT, INSERT, UPDATE, DELETE"
APPEND = "SELECT, INSERT"
READ = "SELECT"

# Reference data shared by every clinic: the API reads it, only the system path changes it.
REFERENCE_TABLES = frozenset(
    {
        "prescriptions_medication",
        "prescriptions_allergyclass",
        "prescriptions_formularyrelease",
        "prescriptions_interactionrule",
        "prescriptions_paediatricdoserule",
        "prescriptions_statevaliditylimit",
        "billing_nhschargerate",
        "pharmacy_partner",
        "pharmacy_partnerstock",
        "django_content_type",
    }
)

# Clinic data, each table under forced row-level security; the append-only ones (refused
# UPDATE and DELETE by a trigger too) get no UPDATE or DELETE privilege either.
CLINIC_TABLES: dict[str, str] = {
    "patients_clinic": READ,
    "patients_clinicclient": "SELECT, UPDATE",
    "patients_patient": READ_WRITE,
    "patients_allergy": READ_WRITE,
    "patients_currentmedication": READ_WRITE,
    "patients_diagnosis": READ_WRITE,
    "patients_observation": READ_WRITE,
    "patients_idempotencykey": READ_WRITE,
    "prescriptions_prescriber": READ_WRITE,
    "prescriptions_prescription": READ_WRITE,
    "prescriptions_prescriptionitem": READ_WRITE,
    "prescriptions_offformularyitem": READ_WRITE,
    "prescriptions_repeatseries": READ_WRITE,
    "prescriptions_pharmacistreview": READ,
    "pharmacy_dispatch": READ_WRITE,
    "pharmacy_deadletter": READ_WRITE,
    "pharmacy_gatewaycancellation": READ_WRITE,
    "pharmacy_orderalert": READ_WRITE,
    "billing_payment": READ_WRITE,
    "billing_refund": READ_WRITE,
    "billing_nhscharge": READ_WRITE,
    "billing_cancellationrequest": READ_WRITE,
    "events_event": APPEND,
    # Finished journeys moved out of the event log (events.archive): read for a timeline.
    "events_event_archive": READ,
    "events_event_archive_journey": READ,
    "events_outboxmessage": READ_WRITE,
    "events_outboxtask": READ_WRITE,
    "events_clinicwebhookendpoint": READ_WRITE,
    "events_webhookdelivery": READ,
    "events_webhookattempt": READ,
    "notifications_notification": READ,
    "interop_receivedorder": READ_WRITE,
    "audit_patientaccess": APPEND,
}


def role_grants_sql(*, tables: set[str]) -> list[sql.Composed]:
    """The statements that leave the tenant role with exactly the allow-list, for the tables
    that exist (a table named here but not migrated yet is skipped)."""
    tenant = sql.Identifier(TENANT_ROLE)
    statements = [
        sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(tenant),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {}").format(tenant),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(tenant),
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(tenant),
    ]
    for table, privileges in sorted({**{t: READ for t in REFERENCE_TABLES}, **CLINIC_TABLES}.items()):
        if table in tables:
            statements.append(
                sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privileges), sql.Identifier(table), tenant)
            )
    if "auditlog_logentry" in tables:
        # The model audit log: an API change appends its entry (INSERT ... RETURNING id) and
        # reads nothing back.
        statements.append(sql.SQL("GRANT INSERT, SELECT (id) ON auditlog_logentry TO {}").format(tenant))
    return statements


def api_login_role() -> tuple[str, str]:
    """The API login role's name and password: `DATABASE_API_URL`'s user and password, or in
    local mode `scriptline_api` with DATABASE_URL's password (none for the embedded server,
    which trusts its socket); see config/settings.py."""
    configured = getattr(settings, "DATABASE_API", None) or {}
    return configured.get("USER") or API_LOGIN_ROLE, configured.get("PASSWORD") or ""


def login_role_sql(*, name: str, password: str) -> list[sql.Composed]:
    role = sql.Identifier(name)
    attributes = sql.SQL("LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION INHERIT")
    return [
        sql.SQL(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) "
            "THEN CREATE ROLE {role}; END IF; END $$"
        ).format(name=sql.Literal(name), role=role),
        sql.SQL("ALTER ROLE {} {}").format(role, attributes),
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(password) if password else sql.NULL),
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(TENANT_ROLE), role),
    ]


def database_roles_apply(*, using: str = "default") -> None:
    """Create or update the API login role and apply the tenant role's allow-list."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = {row[0] for row in cursor.fetchall()}
        name, password = api_login_role()
        cursor.execute("SELECT current_user")
        if cursor.fetchone()[0] == name:
            # Altering it below would strip the system role of its own privileges.
            raise ImproperlyConfigured("DATABASE_API_URL must name a role of its own, not the system role")
        for statement in [*login_role_sql(name=name, password=password), *role_grants_sql(tables=tables)]:
            cursor.execute(statement)
        # Membership in any other role would be a way out of the restriction: take it away.
        cursor.execute(
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s AND r.rolname <> %s",
            [name, TENANT_ROLE],
        )
        for (other,) in cursor.fetchall():
            cursor.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(other), sql.Identifier(name)))
    logger.info("database roles applied: the API login role %s has the clinic allow-list only", name)


def database_roles_on_migrate(sender: Any, using: str = "default", plan: Any = None, **kwargs: Any) -> None:
    """post_migrate receiver (accounts app): after a migrate that ran migrations, and after a
    test flush, the roles match this module again."""
    if connections[using].vendor != "postgresql":
        return
    database_roles_apply(using=using)
