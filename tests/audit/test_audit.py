"""The audit trail: who changed what (django-auditlog, PHI never in clear) and who read which
patient (the access log), both append-only in the database."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.db.utils import InternalError, ProgrammingError
from django.test.utils import CaptureQueriesContext

from audit.models import PatientAccess
from patients.models import Clinic, Patient
from tests.patients.factories import PatientFactory
from tests.support.factories import StaffClient, StaffFactory

pytestmark = pytest.mark.django_db

PATIENTS = "/api/v1/patients/"
ADMIN_PATIENTS = "/admin/patients/patient/"

SYNTHETIC_PHI = {
    "given_name": "Zephyrine",
    "family_name": "Quillfeather",
    "birth_date": "1977-07-17",
    "sex": "female",
    "nhs_number": "9434765919",
    "address_line": "17 Marigold Crescent",
    "city": "Wetherby",
    "postal_code": "LS22 6RT",
    "email": "zephyrine.q@example.org",
    "phone": "+447700900456",
}


def client_id_of(setup) -> str:  # type: ignore[no-untyped-def]
    return setup.clinic.clients.get().application.client_id


def access_inserts(queries: CaptureQueriesContext) -> int:
    return sum(query["sql"].startswith('INSERT INTO "audit_patientaccess"') for query in queries)


def superuser_client() -> tuple[StaffClient, object]:
    user = StaffFactory(is_superuser=True, email="root@example.org")
    client = StaffClient()
    client.force_login(user)
    return client, user


# --- access log: API ------------------------------------------------------------------------------


def test_an_api_list_records_one_access_per_patient_shown_in_one_insert(clinic_a, clinic_b):
    PatientFactory.create_batch(2, clinic=clinic_a.clinic)
    PatientFactory(clinic=clinic_b.clinic)
    clinic_a.api.get(PATIENTS)  # the client's first use is recorded once (last_used_at)
    before = PatientAccess.objects.count()

    with CaptureQueriesContext(connection) as small:
        clinic_a.api.get(PATIENTS)
    PatientFactory.create_batch(5, clinic=clinic_a.clinic)
    with CaptureQueriesContext(connection) as large:
        response = clinic_a.api.get(PATIENTS, REMOTE_ADDR="203.0.113.9")

    assert response.status_code == 200
    assert access_inserts(small) == access_inserts(large) == 1
    assert len(large) == len(small)
    latest = PatientAccess.objects.order_by("-id")[:7]
    assert sorted(access.patient_id for access in latest) == sorted(
        p["id"] for p in response.json()["results"]
    )
    assert {
        (a.channel, a.action, a.client_id, a.staff_user_id, a.remote_addr, a.request_id) for a in latest
    } == {("api", "list", client_id_of(clinic_a), None, "203.0.113.9", response["X-Request-ID"])}
    assert PatientAccess.objects.count() == before + 2 + 7
    assert not PatientAccess.objects.filter(clinic=clinic_b.clinic).exists()


def test_an_api_detail_read_records_who_when_and_from_where(clinic_a):
    patient = PatientFactory(clinic=clinic_a.clinic)

    response = clinic_a.api.get(f"{PATIENTS}{patient.pk}/", REMOTE_ADDR="198.51.100.7")

    assert response.status_code == 200
    access = PatientAccess.objects.get()
    assert access.patient_id == patient.pk
    assert access.clinic_id == clinic_a.clinic.pk
    assert (access.channel, access.action) == ("api", "detail")
    assert access.client_id == client_id_of(clinic_a)
    assert access.staff_user is None
    assert access.remote_addr == "198.51.100.7"
    assert access.request_id == response["X-Request-ID"]
    assert access.accessed_at is not None


def test_reading_another_clinics_patient_is_not_found_and_records_no_access(clinic_a, clinic_b):
    foreign = PatientFactory(clinic=clinic_b.clinic)

    response = clinic_a.api.get(f"{PATIENTS}{foreign.pk}/")

    assert response.status_code == 404
    assert PatientAccess.objects.count() == 0


def test_a_forwarded_for_header_does_not_change_the_recorded_address(clinic_a):
    patient = PatientFactory(clinic=clinic_a.clinic)

    clinic_a.api.get(f"{PATIENTS}{patient.pk}/", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="10.9.9.9")

    assert PatientAccess.objects.get().remote_addr == "198.51.100.7"


# --- access log: admin ----------------------------------------------------------------------------


def test_opening_a_patient_in_the_admin_records_the_staff_member_and_shows_the_full_history(clinic_a):
    patient = PatientFactory(clinic=clinic_a.clinic)
    clinic_a.api.get(f"{PATIENTS}{patient.pk}/", REMOTE_ADDR="198.51.100.7")
    client, user = superuser_client()

    first = client.get(f"{ADMIN_PATIENTS}{patient.pk}/change/", REMOTE_ADDR="192.0.2.44")
    second = client.get(f"{ADMIN_PATIENTS}{patient.pk}/change/", REMOTE_ADDR="192.0.2.44")

    assert first.status_code == second.status_code == 200
    staff_access = PatientAccess.objects.filter(channel="admin").order_by("id")
    assert [(a.staff_user_id, a.action, a.remote_addr, a.client_id) for a in staff_access] == [
        (user.pk, "detail", "192.0.2.44", ""),
        (user.pk, "detail", "192.0.2.44", ""),
    ]
    page = second.content.decode()
    assert page.count("<tr><td>") == 3  # the API read and both admin views (this one included)
    assert f"<td>staff:{user.username}</td><td>Back office</td><td>Opened</td><td>192.0.2.44</td>" in page
    assert (
        f"<td>client:{client_id_of(clinic_a)}</td><td>Clinic API</td><td>Opened</td><td>198.51.100.7</td>"
        in page
    )
    assert f"/admin/audit/patientaccess/?patient__id__exact={patient.pk}" in page


def test_the_admin_patient_list_records_every_patient_shown_in_one_insert(clinic_a):
    client, user = superuser_client()
    PatientFactory.create_batch(2, clinic=clinic_a.clinic)
    client.get(ADMIN_PATIENTS)
    with CaptureQueriesContext(connection) as small:
        client.get(ADMIN_PATIENTS)
    PatientFactory.create_batch(6, clinic=clinic_a.clinic)
    with CaptureQueriesContext(connection) as large:
        response = client.get(ADMIN_PATIENTS)

    shown = [patient.pk for patient in response.context["cl"].result_list]
    assert len(shown) == 8
    assert access_inserts(small) == access_inserts(large) == 1
    assert len(large) == len(small)
    last = PatientAccess.objects.order_by("-id")[:8]
    assert sorted(a.patient_id for a in last) == sorted(shown)
    assert {(a.staff_user_id, a.channel, a.action) for a in last} == {(user.pk, "admin", "list")}


# --- append-only -----------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["audit_patientaccess", "auditlog_logentry"])
@pytest.mark.parametrize("statement", ["UPDATE {table} SET remote_addr = '10.0.0.1'", "DELETE FROM {table}"])
def test_the_audit_tables_refuse_update_and_delete_in_the_database(clinic_a, table, statement):
    patient = PatientFactory(clinic=clinic_a.clinic)
    clinic_a.api.get(f"{PATIENTS}{patient.pk}/")
    assert LogEntry.objects.exists()
    counts = (PatientAccess.objects.count(), LogEntry.objects.count())
    addresses = set(PatientAccess.objects.values_list("remote_addr", flat=True))

    with (
        pytest.raises((InternalError, ProgrammingError), match="is append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement.format(table=table))

    assert (PatientAccess.objects.count(), LogEntry.objects.count()) == counts
    assert set(PatientAccess.objects.values_list("remote_addr", flat=True)) == addresses


# --- django-auditlog -----------------------------------------------------------------------------


def test_registering_a_patient_through_the_api_is_audited_without_any_identifier_in_clear(clinic_a):
    response = clinic_a.api.post(
        PATIENTS, SYNTHETIC_PHI, format="json", HTTP_IDEMPOTENCY_KEY="audit-1", REMOTE_ADDR="203.0.113.5"
    )

    assert response.status_code == 201
    entry = LogEntry.objects.get(content_type=ContentType.objects.get_for_model(Patient))
    assert entry.action == LogEntry.Action.CREATE
    assert entry.object_id == response.json()["id"]
    assert entry.remote_addr == "203.0.113.5"
    assert entry.actor is None
    assert entry.actor_email == f"client:{client_id_of(clinic_a)}"
    assert entry.cid == response["X-Request-ID"]
    for field in ("given_name", "family_name", "birth_date", "nhs_number", "email", "phone", "city"):
        assert entry.changes[field][1] == "[redacted]", field
    assert "nhs_number_index" not in entry.changes
    assert entry.changes["sex"] == ["None", "female"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(e)::text FROM auditlog_logentry e")
        raw = " ".join(row[0] for row in cursor.fetchall())
    for value in SYNTHETIC_PHI.values():
        if value != "female":
            assert value not in raw, value


def test_a_staff_change_is_audited_with_the_staff_member_and_their_address():
    clinic = Clinic.objects.create(name="Old name", jurisdiction="GB")
    client, user = superuser_client()

    response = client.post(
        f"/admin/patients/clinic/{clinic.pk}/change/",
        {"name": "New name", "jurisdiction": "GB", "currency": "GBP", "ods_code": "", "address": ""},
        REMOTE_ADDR="192.0.2.80",
    )

    assert response.status_code == 302
    entry = LogEntry.objects.get(
        content_type=ContentType.objects.get_for_model(Clinic), action=LogEntry.Action.UPDATE
    )
    assert entry.actor == user
    assert entry.actor_email == "root@example.org"
    assert entry.remote_addr == "192.0.2.80"
    assert entry.changes == {"name": ["Old name", "New name"]}


def test_adding_a_staff_member_to_a_role_is_audited():
    from django.contrib.auth.models import Group

    user = StaffFactory()

    user.groups.add(Group.objects.get(name="pharmacist"))

    entry = LogEntry.objects.filter(object_id=user.pk, action=LogEntry.Action.UPDATE).latest("id")
    assert entry.changes["groups"] == {"type": "m2m", "operation": "add", "objects": ["pharmacist"]}


def test_a_prescription_from_the_api_is_audited_as_django_auditlog_itself_would_audit_it(
    clinic_a, patient_a, paracetamol
):
    """Intake writes the prescription and its audit entry with hand-written SQL: the entry must
    be the one django-auditlog's post_save receiver writes for the same row, field for field."""
    from auditlog.receivers import log_create

    from prescriptions.models import Prescription
    from tests.conftest import prescription_body

    body = {**prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol), "note": "Synthetic note"}
    response = clinic_a.api.post(
        "/api/v1/prescriptions/",
        body,
        format="json",
        HTTP_IDEMPOTENCY_KEY="audit-rx",
        REMOTE_ADDR="203.0.113.9",
    )

    assert response.status_code == 201
    kind = ContentType.objects.get_for_model(Prescription)
    written = LogEntry.objects.get(content_type=kind, object_id=response.json()["id"])
    prescription = Prescription.objects.get(pk=response.json()["id"])
    with transaction.atomic():
        log_create(sender=Prescription, instance=prescription, created=True)
        reference = LogEntry.objects.filter(content_type=kind).latest("id")
        transaction.set_rollback(True)
    assert reference.pk != written.pk
    compared = [f.attname for f in LogEntry._meta.concrete_fields if f.attname not in ("id", "timestamp")]
    expected = {name: getattr(reference, name) for name in compared}
    # Outside the request, auditlog's receiver knows no request: those fields are the request's.
    expected.update(
        cid=response["X-Request-ID"],
        remote_addr="203.0.113.9",
        actor_email=f"client:{client_id_of(clinic_a)}",
    )
    assert {name: getattr(written, name) for name in compared} == expected
    assert written.changes["note"] == ["[redacted]", "[redacted]"]
    assert written.changes["id"] == ["None", str(prescription.pk)]
