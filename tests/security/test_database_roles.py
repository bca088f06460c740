"""The API's login role, connected to directly with raw SQL: what it may not read, write or
become. The connection is psycopg's own, logged in as the role (as an API process would be),
so nothing in Django stands between the statement and the database."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from django.db import connection
from psycopg import sql

from accounts.database_roles import TENANT_ROLE, api_login_role
from prescriptions.formulary import formulary_load
from tests.conftest import FORMULARY_FILE, make_clinic_setup
from tests.patients.factories import PatientFactory
from tests.support.factories import StaffFactory

pytestmark = pytest.mark.django_db(transaction=True)

SENSITIVE_TABLES = [
    "auth_user",
    "auth_group",
    "auth_permission",
    "auth_user_groups",
    "django_session",
    "django_admin_log",
    "otp_totp_totpdevice",
    "oauth2_provider_accesstoken",
    "oauth2_provider_refreshtoken",
    "oauth2_provider_application",
    "oauth2_provider_grant",
    "oauth2_provider_idtoken",
    "axes_accessattempt",
    "guardian_userobjectpermission",
    "django_celery_beat_periodictask",
    "prescriptions_pharmacistprofile",
    "support_enquiry",
]
REFERENCE_TABLES = ["prescriptions_medication", "billing_nhschargerate", "prescriptions_interactionrule"]


@pytest.fixture
def api_role() -> Iterator[psycopg.Connection]:
    name, password = api_login_role()
    database = connection.settings_dict
    with psycopg.connect(
        host=database["HOST"] or "127.0.0.1",
        port=database["PORT"] or 5432,
        dbname=database["NAME"],
        user=name,
        password=password or None,
        autocommit=True,
    ) as raw:
        yield raw


def _refused(raw: psycopg.Connection, statement: sql.Composable | str) -> bool:
    try:
        raw.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


def test_the_login_role_is_no_superuser_and_a_member_of_the_tenant_role_only(api_role):
    name, _ = api_login_role()
    attributes = api_role.execute(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication, rolcanlogin "
        "FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    memberships = api_role.execute(
        "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
        "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = current_user"
    ).fetchall()

    assert api_role.execute("SELECT current_user").fetchone() == (name,)
    assert attributes == (False, False, False, False, False, True)
    assert memberships == [(TENANT_ROLE,)]


def _a_column_of(table: str) -> sql.Identifier:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
            [table],
        )
        return sql.Identifier(cursor.fetchone()[0])


def test_the_login_role_can_neither_read_nor_change_a_sensitive_table(api_role):
    StaffFactory()
    make_clinic_setup("Clinic A")
    allowed = []
    for table in SENSITIVE_TABLES:
        target, column = sql.Identifier(table), _a_column_of(table)
        for statement in (
            sql.SQL("SELECT * FROM {} LIMIT 1").format(target),
            sql.SQL("SELECT count(*) FROM {}").format(target),
            sql.SQL("UPDATE {} SET {} = {}").format(target, column, column),
            sql.SQL("INSERT INTO {} DEFAULT VALUES").format(target),
            sql.SQL("DELETE FROM {}").format(target),
            sql.SQL("TRUNCATE {}").format(target),
        ):
            if not _refused(api_role, statement):
                allowed.append(statement.as_string(api_role))

    assert allowed == []


def test_the_login_role_reads_no_password_hash_and_no_token(api_role):
    StaffFactory()
    make_clinic_setup("Clinic A")

    assert _refused(api_role, "SELECT password FROM auth_user")
    assert _refused(api_role, "SELECT token_checksum FROM oauth2_provider_accesstoken")
    assert _refused(api_role, "SELECT client_secret FROM oauth2_provider_application")
    assert _refused(api_role, "SELECT session_data FROM django_session")
    assert _refused(api_role, "SELECT key FROM otp_totp_totpdevice")


def test_the_login_role_reads_reference_data_but_cannot_change_it(api_role, nhs_charge_rates):
    formulary_load(path=FORMULARY_FILE)
    allowed = []
    for table in REFERENCE_TABLES:
        target, column = sql.Identifier(table), _a_column_of(table)
        assert api_role.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0] > 0
        for statement in (
            sql.SQL("UPDATE {} SET {} = {}").format(target, column, column),
            sql.SQL("INSERT INTO {} DEFAULT VALUES").format(target),
            sql.SQL("DELETE FROM {}").format(target),
            sql.SQL("TRUNCATE {}").format(target),
        ):
            if not _refused(api_role, statement):
                allowed.append(statement.as_string(api_role))

    assert allowed == []


def test_the_login_role_cannot_leave_its_restriction(api_role):
    name, _ = api_login_role()
    system_role = connection.settings_dict["USER"] or "postgres"
    StaffFactory()

    api_role.execute("RESET ROLE")
    assert api_role.execute("SELECT current_user").fetchone() == (name,)
    assert _refused(api_role, "SELECT * FROM auth_user")
    api_role.execute("SET SESSION AUTHORIZATION DEFAULT")
    assert api_role.execute("SELECT current_user").fetchone() == (name,)
    assert _refused(api_role, "SELECT * FROM auth_user")
    assert _refused(api_role, sql.SQL("SET ROLE {}").format(sql.Identifier(system_role)))
    assert _refused(api_role, sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(system_role)))
    assert _refused(
        api_role, sql.SQL("GRANT {} TO {}").format(sql.Identifier(system_role), sql.Identifier(name))
    )
    assert _refused(api_role, "ALTER TABLE patients_patient DISABLE ROW LEVEL SECURITY")
    assert _refused(api_role, "CREATE ROLE escape SUPERUSER")


def test_the_login_role_sees_only_the_clinic_it_is_scoped_to(api_role):
    own = make_clinic_setup("Clinic A")
    other = make_clinic_setup("Clinic B")
    mine = PatientFactory(clinic=own.clinic)
    PatientFactory(clinic=other.clinic)

    unscoped = api_role.execute("SELECT count(*) FROM patients_patient").fetchone()
    widened = api_role.execute(
        "SELECT set_config('app.clinic_id', '*', false), count(*) FROM patients_patient"
    ).fetchone()
    api_role.execute("SELECT set_config('app.clinic_id', %s, false)", [str(own.clinic.pk)])
    scoped = api_role.execute("SELECT id FROM patients_patient").fetchall()
    foreign_update = api_role.execute(
        "UPDATE patients_patient SET sex = 'male' WHERE clinic_id = %s", [other.clinic.pk]
    ).rowcount

    assert unscoped == (0,)
    assert widened == ("*", 0)
    assert scoped == [(mine.pk,)]
    assert foreign_update == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        api_role.execute(
            "UPDATE patients_patient SET clinic_id = %s WHERE id = %s", [other.clinic.pk, mine.pk]
        )
