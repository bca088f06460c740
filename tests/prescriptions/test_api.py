"""The clinic API for prescriptions: intake, reads, cancel, problem+json errors."""

from __future__ import annotations

import pytest

from events.models import Event
from patients.models import IdempotencyKey
from prescriptions.models import Prescription, Status
from tests.conftest import prescription_body
from tests.patients.factories import PatientFactory
from tests.prescriptions.factories import MedicationFactory

pytestmark = pytest.mark.django_db


def post(setup, body, key="key-1"):  # type: ignore[no-untyped-def]
    return setup.api.post("/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_it_accepts_a_valid_prescription_and_records_the_received_event(clinic_a, patient_a, paracetamol):
    response = post(clinic_a, prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol))

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "received"
    assert body["items"][0]["medication"]["code"] == "322236009"
    assert body["items"][0]["quantity"] == "28.00"
    assert [event["type"] for event in body["timeline"]] == ["prescription.received"]
    prescription = Prescription.objects.get()
    assert prescription.clinic == clinic_a.clinic
    assert Event.objects.filter(aggregate_type="prescription", aggregate_id=prescription.pk).count() == 1


def test_it_lists_every_invalid_field_as_problem_json_and_stores_nothing(clinic_a, patient_a, paracetamol):
    body = prescription_body(
        patient_a.pk,
        999999,
        paracetamol,
        item={"quantity": "-1", "days_supply": 0, "medication": {"system": "x", "code": "nope"}},
    )

    response = post(clinic_a, body)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400
    assert problem["type"] == "/problems/validation-error"
    pointers = sorted(error["pointer"] for error in problem["errors"])
    assert pointers == ["#/items/0/days_supply", "#/items/0/quantity", "#/prescriber"]
    assert Prescription.objects.count() == 0
    assert Event.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0


def test_it_rejects_an_unknown_medication_with_a_pointer_to_the_item(clinic_a, patient_a, paracetamol):
    body = prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)
    body["items"].append(
        {**body["items"][0], "medication": {"system": "http://snomed.info/sct", "code": "0"}}
    )

    response = post(clinic_a, body)

    assert response.status_code == 400
    assert [error["pointer"] for error in response.json()["errors"]] == ["#/items/1/medication"]
    assert Prescription.objects.count() == 0


def test_it_rejects_a_body_that_is_not_json(clinic_a):
    response = clinic_a.api.post(
        "/api/v1/prescriptions/",
        "{not json",
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="k",
    )

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert Prescription.objects.count() == 0


def test_another_clinics_patient_is_refused_as_if_it_did_not_exist(clinic_a, clinic_b, paracetamol):
    foreign = PatientFactory(clinic=clinic_b.clinic)

    response = post(clinic_a, prescription_body(foreign.pk, clinic_a.prescriber.pk, paracetamol))

    assert response.status_code == 400
    assert response.json()["errors"] == [{"pointer": "#/patient", "detail": "No such patient."}]
    assert Prescription.objects.count() == 0


def test_clinic_b_cannot_read_or_cancel_clinic_a_prescription(clinic_a, clinic_b, patient_a, paracetamol):
    created = post(clinic_a, prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)).json()

    read = clinic_b.api.get(f"/api/v1/prescriptions/{created['id']}/")
    cancel = clinic_b.api.post(
        f"/api/v1/prescriptions/{created['id']}/cancel/", {"reason": "x"}, format="json"
    )
    listing = clinic_b.api.get("/api/v1/prescriptions/")

    assert read.status_code == 404
    assert cancel.status_code == 404
    assert listing.json()["results"] == []
    assert Prescription.objects.get().status == Status.RECEIVED


def test_it_needs_a_token(db, patient_a, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    from rest_framework.test import APIClient

    response = APIClient().get("/api/v1/prescriptions/")

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_token_without_the_write_scope_cannot_submit(db, paracetamol):  # type: ignore[no-untyped-def]
    from tests.conftest import make_clinic_setup

    reader = make_clinic_setup("Read-only", scope="prescriptions:read patients:read")
    patient = PatientFactory(clinic=reader.clinic)

    response = post(reader, prescription_body(patient.pk, reader.prescriber.pk, paracetamol))

    assert response.status_code == 403
    assert Prescription.objects.count() == 0


def test_cancel_moves_a_received_prescription_to_cancelled_once(clinic_a, patient_a, paracetamol):
    created = post(clinic_a, prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)).json()
    url = f"/api/v1/prescriptions/{created['id']}/cancel/"

    first = clinic_a.api.post(url, {"reason": "Patient changed their mind"}, format="json")
    second = clinic_a.api.post(url, {"reason": "again"}, format="json")

    assert first.status_code == 200
    assert first.json()["status"] == "cancelled"
    assert second.status_code == 200
    types = list(Event.objects.filter(aggregate_id=created["id"]).values_list("type", flat=True))
    assert types == ["prescription.received", "prescription.cancelled"]


def test_cancel_of_a_delivered_prescription_is_a_conflict(clinic_a, patient_a, paracetamol):
    created = post(clinic_a, prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)).json()
    Prescription.objects.filter(pk=created["id"]).update(status=Status.DELIVERED)

    response = clinic_a.api.post(
        f"/api/v1/prescriptions/{created['id']}/cancel/", {"reason": "late"}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["type"] == "/problems/not-cancellable"
    assert Prescription.objects.get().status == Status.DELIVERED


def test_cancel_needs_a_reason(clinic_a, patient_a, paracetamol):
    created = post(clinic_a, prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)).json()

    response = clinic_a.api.post(f"/api/v1/prescriptions/{created['id']}/cancel/", {}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["pointer"] == "#/reason"
    assert Prescription.objects.get().status == Status.RECEIVED


def test_the_list_is_paginated_and_filtered_by_status(clinic_a, patient_a, paracetamol):
    for index in range(3):
        post(clinic_a, prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol), key=f"k{index}")
    Prescription.objects.filter(pk=Prescription.objects.order_by("id").first().pk).update(
        status=Status.CANCELLED
    )

    everything = clinic_a.api.get("/api/v1/prescriptions/").json()
    cancelled = clinic_a.api.get("/api/v1/prescriptions/?status=cancelled").json()

    assert everything["count"] == 3
    assert cancelled["count"] == 1


def test_list_and_detail_queries_stay_constant_as_data_grows(
    clinic_a, patient_a, paracetamol, django_assert_max_num_queries
):  # type: ignore[no-untyped-def]
    other = MedicationFactory(code="323509004", name="Amoxicillin")

    def add(count: int) -> None:
        for _ in range(count):
            body = prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)
            body["items"].append(
                {**body["items"][0], "medication": {"system": other.code_system, "code": other.code}}
            )
            post(clinic_a, body, key=f"k{Prescription.objects.count()}")

    add(2)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as small:
        assert clinic_a.api.get("/api/v1/prescriptions/").status_code == 200
    add(10)
    with CaptureQueriesContext(connection) as large:
        assert clinic_a.api.get("/api/v1/prescriptions/").status_code == 200
    assert len(large) == len(small)
    last = Prescription.objects.order_by("-id").first().pk
    with django_assert_max_num_queries(len(small) + 1):
        assert clinic_a.api.get(f"/api/v1/prescriptions/{last}/").status_code == 200


def test_medication_search_finds_by_name_and_by_code(clinic_a, paracetamol, methylphenidate):
    by_name = clinic_a.api.get("/api/v1/medications/?search=Methylphenidate").json()
    by_code = clinic_a.api.get("/api/v1/medications/?search=322236009").json()

    # Every GB and US methylphenidate (and dexmethylphenidate) product, in one page.
    names = {m["name"] for m in by_name["results"]}
    assert all("methylphenidate" in name.lower() for name in names)
    assert {
        "Methylphenidate 18mg modified-release tablets",
        "Methylphenidate hydrochloride 10 MG Oral Tablet",
    } <= names
    assert len(by_name["results"]) == by_name["count"] == 42
    assert {m["controlled_schedule"] for m in by_name["results"]} == {"2", "II"}
    assert [m["code"] for m in by_code["results"]] == ["322236009"]
    assert by_code["results"][0]["ingredients"] == ["paracetamol"]
    assert by_code["results"][0]["max_daily_dose"] == "4000.000"


def test_the_schema_and_docs_are_served(client):  # type: ignore[no-untyped-def]
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    assert "/api/v1/prescriptions/{id}/cancel/" in schema.json()["paths"]
    assert docs.status_code == 200
    assert b"drf_spectacular_sidecar" in docs.content  # assets served here, not from a CDN


@pytest.mark.django_db(transaction=True)
def test_intake_is_one_transaction_of_at_most_ten_queries_whatever_the_number_of_items(
    clinic_a, patient_a, paracetamol
):  # type: ignore[no-untyped-def]
    # Transactional, so the request's transaction is the outermost one, as in production:
    # its BEGIN and COMMIT are counted, and nothing is reset for an enclosing test transaction.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from events.models import OutboxMessage
    from prescriptions.models import Medication

    others = list(Medication.objects.filter(is_active=True).exclude(pk=paracetamol.pk).order_by("id")[:2])
    one = prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)
    three = prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)
    three["items"] += [
        {**three["items"][0], "medication": {"system": other.code_system, "code": other.code}}
        for other in others
    ]
    # The client's last-used time is written at most once a minute: this request writes it.
    assert post(clinic_a, one, key="first").status_code == 201

    with CaptureQueriesContext(connection) as single:
        assert post(clinic_a, one, key="one").status_code == 201
    with CaptureQueriesContext(connection) as several:
        response = post(clinic_a, three, key="three")

    statements = [query["sql"] for query in single.captured_queries]
    # BEGIN, the token with its clinic, the tenant scope, the idempotency claim, the parties, the
    # medications, the prescription, its items with its audit entry and event, the key, COMMIT.
    assert len(statements) <= 10, "\n".join(statements)
    assert (statements[0], statements[-1]) == ("BEGIN", "COMMIT")
    assert not [sql for sql in statements if "SAVEPOINT" in sql]
    assert len(several.captured_queries) == len(statements)
    assert response.status_code == 201
    body = response.json()
    assert [item["medication"]["code"] for item in body["items"]] == [
        paracetamol.code,
        *(other.code for other in others),
    ]
    assert [event["type"] for event in body["timeline"]] == ["prescription.received"]
    # What the answer says is what was stored, with its event, outbox row and idempotency key.
    stored = Prescription.objects.get(pk=body["id"])
    assert list(stored.items.values_list("medication__code", flat=True)) == [
        item["medication"]["code"] for item in body["items"]
    ]
    assert Event.objects.filter(aggregate_type="prescription", aggregate_id=stored.pk).count() == 1
    assert OutboxMessage.objects.filter(event__aggregate_id=stored.pk).count() == 1
    assert IdempotencyKey.objects.filter(key="three").count() == 1
    replay = post(clinic_a, three, key="three")
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == body


def test_an_id_no_row_can_have_is_refused_for_its_own_field_only(clinic_a, patient_a, paracetamol):
    body = prescription_body(2**63 + 5, clinic_a.prescriber.pk, paracetamol)

    response = post(clinic_a, body)

    assert response.status_code == 400
    assert response.json()["errors"] == [{"pointer": "#/patient", "detail": "No such patient."}]
    assert Prescription.objects.count() == 0
