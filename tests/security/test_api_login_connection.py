"""Clinic-facing requests log in as the API role (accounts.tenancy.tenant_work): raw SQL inside
a request, whatever it tries, runs as that role, and everything else stays on the system role.

The probe views below are mounted beside the real URLs, behind the real middleware and the real
token authentication; the test data is committed (transaction=True), as a real process sees it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.utils import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.test.utils import CaptureQueriesContext
from django.urls import path
from psycopg import sql
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.database_roles import api_login_role
from accounts.tenancy import API_ALIAS, api_connection, api_connection_settings
from config.urls import urlpatterns as real_urlpatterns
from patients.models import Patient
from prescriptions.models import Prescription
from tests.conftest import make_clinic_setup, prescription_body
from tests.patients.factories import PatientFactory
from tests.patients.test_api import a_patient_body
from tests.processes import test_database_url as database_url_of_tests
from tests.support.factories import StaffFactory

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls("tests.security.test_api_login_connection"),
]


def _system_role() -> str:
    return str(settings.DATABASES["default"]["USER"] or "postgres")


def _attempt(statement: str | sql.Composable) -> Any:
    """One statement in a savepoint of the request's transaction: its first row, or the name of
    the error that refused it."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
            return list(cursor.fetchone() or []) if cursor.description else "ok"
    except DatabaseError as error:
        return type(error.__cause__).__name__


class EscapeProbeApi(APIView):
    """What raw SQL in a request could try against its restriction."""

    def get(self, request: Request) -> Response:
        other_clinic = request.query_params["other_clinic"]
        return Response(
            {
                "users": _attempt("SELECT current_user, session_user"),
                "reset_role": _attempt("RESET ROLE"),
                "after_reset": _attempt("SELECT current_user"),
                "auth_user": _attempt("SELECT count(*) FROM auth_user"),
                "password": _attempt("SELECT password FROM auth_user LIMIT 1"),
                "access_token": _attempt("SELECT count(*) FROM oauth2_provider_accesstoken"),
                "session": _attempt("SELECT count(*) FROM django_session"),
                "set_role_system": _attempt(sql.SQL("SET ROLE {}").format(sql.Identifier(_system_role()))),
                "session_authorization": _attempt("SET SESSION AUTHORIZATION DEFAULT"),
                "after_session_authorization": _attempt("SELECT current_user"),
                "medication_update": _attempt("UPDATE prescriptions_medication SET name = name"),
                "own_patients": Patient.objects.count(),
                "widen_scope": _attempt(
                    "SELECT set_config('app.clinic_id', '*', true), "
                    f"(SELECT count(*) FROM patients_patient WHERE clinic_id = {int(other_clinic)})"
                ),
            }
        )


def system_probe(request: HttpRequest) -> JsonResponse:
    """A path outside the clinic API (as the admin and the webhooks are)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, session_user")
        return JsonResponse({"users": list(cursor.fetchone())})


urlpatterns = [
    path("api/v1/escape-probe/", EscapeProbeApi.as_view()),
    path("probe/", system_probe),
    *real_urlpatterns,
]


@pytest.fixture(autouse=True)
def _api_login_connection(settings: Any) -> Iterator[None]:
    settings.API_LOGIN_CONNECTION = True
    yield
    # Its database is dropped after the run: nothing may stay connected to it.
    api_connection().close()


def test_raw_sql_in_an_api_request_runs_as_the_api_role_and_cannot_leave_it():
    api_role, _ = api_login_role()
    StaffFactory()
    own, other = make_clinic_setup("Clinic A"), make_clinic_setup("Clinic B")
    PatientFactory(clinic=own.clinic)
    PatientFactory(clinic=other.clinic)

    response = own.api.get(f"/api/v1/escape-probe/?other_clinic={other.clinic.pk}")

    assert response.status_code == 200, response.content
    seen = response.json()
    assert seen["users"] == [api_role, api_role]
    assert seen["reset_role"] == "ok"
    assert seen["after_reset"] == [api_role]
    assert seen["auth_user"] == "InsufficientPrivilege"
    assert seen["password"] == "InsufficientPrivilege"
    assert seen["access_token"] == "InsufficientPrivilege"
    assert seen["session"] == "InsufficientPrivilege"
    assert seen["set_role_system"] == "InsufficientPrivilege"
    assert seen["after_session_authorization"] == [api_role]
    assert seen["medication_update"] == "InsufficientPrivilege"
    assert seen["widen_scope"] == ["*", 0]
    assert seen["own_patients"] == 1


def test_the_request_path_works_end_to_end_on_the_api_connection_and_the_system_role_comes_back():
    setup = make_clinic_setup("Clinic A")
    body = a_patient_body()

    created = setup.api.post("/api/v1/patients/", body, format="json", HTTP_IDEMPOTENCY_KEY="login-1")
    listed = setup.api.get("/api/v1/patients/")
    refused = setup.api.post("/api/v1/patients/", {"given_name": ""}, format="json", HTTP_IDEMPOTENCY_KEY="x")

    assert created.status_code == 201, created.content
    assert [patient["id"] for patient in listed.json()["results"]] == [created.json()["id"]]
    assert refused.status_code == 400
    # The request's transaction committed on the API connection and the system one is back.
    assert connections["default"] is not connections[API_ALIAS]
    assert not connections[API_ALIAS].in_atomic_block
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, count(*) FROM patients_patient")
        assert cursor.fetchone() == (_system_role(), 1)
    with connections[API_ALIAS].cursor() as cursor:
        cursor.execute("SELECT current_setting('app.clinic_id', true), count(*) FROM patients_patient")
        # Outside a request the API connection has no clinic: it sees nothing.
        assert cursor.fetchone() in {(None, 0), ("", 0)}


def test_a_token_refused_before_the_switch_opens_no_transaction_on_the_api_connection():
    setup = make_clinic_setup("Clinic A")
    setup.api.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")

    with CaptureQueriesContext(api_connection()) as api:
        response = setup.api.get("/api/v1/patients/")

    assert response.status_code == 401
    assert api.captured_queries == []
    assert connections["default"].settings_dict["USER"] == settings.DATABASES["default"]["USER"]
    assert not connection.in_atomic_block


def test_paths_outside_the_clinic_api_run_as_the_system_role(client):
    response = client.get("/probe/")

    assert response.json()["users"] == [_system_role(), _system_role()]


def test_a_process_serving_no_request_uses_the_system_role():
    """A separate process with the real settings (the API connection on), as a management
    command or a Celery worker starts: its connection is the system role's."""
    code = (
        "import django; django.setup()\n"
        "from django.db import connection\n"
        "from config.celery import app\n"
        "with connection.cursor() as cursor:\n"
        "    cursor.execute('SELECT current_user, session_user')\n"
        "    print(*cursor.fetchone())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": database_url_of_tests(),
            "API_LOGIN_CONNECTION": "true",
            "CELERY_BROKER_URL": "memory://",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [_system_role(), _system_role()]


def test_intake_on_the_api_connection_costs_the_same_queries_one_of_them_the_token_on_the_system_one(
    paracetamol,
):  # type: ignore[no-untyped-def]
    setup = make_clinic_setup("Clinic A")
    patient = PatientFactory(clinic=setup.clinic)
    body = prescription_body(patient.pk, setup.prescriber.pk, paracetamol)

    def intake(key: str) -> Any:
        return setup.api.post("/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    # The client's last-used time is written at most once a minute: this request writes it.
    assert intake("first").status_code == 201
    with (
        CaptureQueriesContext(connections["default"]) as system,
        CaptureQueriesContext(api_connection()) as api,
    ):
        assert intake("second").status_code == 201

    on_system = [query["sql"] for query in system.captured_queries]
    on_api = [query["sql"] for query in api.captured_queries]
    assert len(on_system) == 1, on_system
    assert "oauth2_provider_accesstoken" in on_system[0]
    assert (on_api[0], on_api[-1]) == ("BEGIN", "COMMIT")
    assert "app.clinic_id" in on_api[1]
    assert len(on_system) + len(on_api) <= 12, "\n".join(on_system + on_api)


def test_the_api_connection_takes_the_login_from_its_url_and_the_database_from_the_system_one(settings):  # type: ignore[no-untyped-def]
    system = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test_scriptline",
        "USER": "scriptline",
        "PASSWORD": "system-pw",
        "HOST": "db.internal",
        "PORT": 5432,
        "CONN_MAX_AGE": 0,
        "OPTIONS": {"sslmode": "require"},
        "TEST": {"NAME": "test_scriptline"},
    }
    settings.DATABASE_API = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "elsewhere",
        "USER": "scriptline_api",
        "PASSWORD": "api-pw",
        "HOST": "db.internal",
        "PORT": 6432,
        "CONN_MAX_AGE": 60,
        "OPTIONS": {},
    }

    derived = api_connection_settings(system)

    assert derived == {
        **system,
        "USER": "scriptline_api",
        "PASSWORD": "api-pw",
        "PORT": 6432,
        "CONN_MAX_AGE": 60,
        "ATOMIC_REQUESTS": False,
        "TEST": {},
    }


def test_a_plan_prepared_for_one_clinic_on_the_api_connection_shows_another_clinic_only_its_own_rows(
    paracetamol,
):  # type: ignore[no-untyped-def]
    """Hot statements are prepared once per connection (common.rows.planned_cursor) and the API
    connection serves every clinic in turn: the row-level policy, not the plan, decides what a
    clinic sees, so a plan prepared during one clinic's requests leaks nothing to the next."""
    own, other = make_clinic_setup("Clinic A"), make_clinic_setup("Clinic B")
    own_patient = PatientFactory(clinic=own.clinic)
    other_patient = PatientFactory(clinic=other.clinic)

    for attempt in range(6):  # past psycopg's prepare threshold (5)
        body = prescription_body(own_patient.pk, own.prescriber.pk, paracetamol)
        assert (
            own.api.post(
                "/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY=f"a-{attempt}"
            ).status_code
            == 201
        )
    with api_connection().cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [statement for (statement,) in cursor.fetchall()]
    assert any("patients_patient" in statement for statement in prepared), prepared

    # Clinic B, on the same connection with the same prepared plans, names clinic A's patient.
    across = other.api.post(
        "/api/v1/prescriptions/",
        prescription_body(own_patient.pk, other.prescriber.pk, paracetamol),
        format="json",
        HTTP_IDEMPOTENCY_KEY="b-across",
    )
    own_side = other.api.post(
        "/api/v1/prescriptions/",
        prescription_body(other_patient.pk, other.prescriber.pk, paracetamol),
        format="json",
        HTTP_IDEMPOTENCY_KEY="b-own",
    )

    assert across.status_code in {400, 404}, across.content
    assert own_side.status_code == 201, own_side.content
    listed = other.api.get("/api/v1/prescriptions/").json()["results"]
    assert [row["id"] for row in listed] == [own_side.json()["id"]]
    assert Prescription.objects.filter(clinic=other.clinic).count() == 1
    assert Prescription.objects.filter(clinic=own.clinic).count() == 6
