"""FHIR reads for pollers: MedicationRequest by id and by identifier, scoped to the clinic."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.medicationrequest import MedicationRequest

from pharmacy.fhir.eps.prescription_id import short_form_id
from prescriptions.models import Prescription, Status
from tests.conftest import prescription_body
from tests.interop.test_fhir_intake import (
    EXAMPLE_PRESCRIPTION_ID,
    FHIR_JSON,
    ITEM_NUMBER_SYSTEM,
    ORDER_NUMBER_SYSTEM,
    REPEAT_ORDER,
    eps_clinic,
    example,
    issues,
    post,
    renamed,
    resources_of,
)
from tests.patients.factories import PatientFactory

pytestmark = pytest.mark.django_db

SECOND_ITEM = "6989b7bd-8db6-428c-a593-4022e3044c00"


@pytest.fixture
def clinic(db):  # type: ignore[no-untyped-def]
    return eps_clinic()


@pytest.fixture
def received(clinic) -> Prescription:  # type: ignore[no-untyped-def]
    assert post(clinic, example(REPEAT_ORDER)).status_code == 200
    return Prescription.objects.get()


def test_a_medication_request_is_read_by_id_with_its_status(clinic, received):
    response = clinic.api.get(f"/fhir/R4/MedicationRequest/{received.pk}-2")

    assert response.status_code == 200
    assert response["Content-Type"] == FHIR_JSON
    resource = response.json()
    MedicationRequest.model_validate(resource)
    assert resource["id"] == f"{received.pk}-2"
    assert resource["status"] == "active"
    assert resource["extension"][0]["valueCode"] == "received"
    assert resource["identifier"][0] == {"system": ITEM_NUMBER_SYSTEM, "value": SECOND_ITEM}
    assert resource["medicationCodeableConcept"]["coding"][0]["code"] == "322341003"
    assert resource["dispenseRequest"]["quantity"] == {"value": 20.0, "unit": "tablet"}


@pytest.mark.parametrize(
    ("status", "fhir_status"),
    [
        (Status.AWAITING_PHARMACIST, "active"),
        (Status.SHIPPED, "active"),
        (Status.DEAD_LETTERED, "on-hold"),
        (Status.DELIVERED, "completed"),
        (Status.CANCELLED, "cancelled"),
        (Status.REJECTED, "stopped"),
    ],
)
def test_our_status_maps_onto_medication_request_status(clinic, received, status, fhir_status):
    Prescription.objects.filter(pk=received.pk).update(status=status, status_reason="why")

    resource = clinic.api.get(f"/fhir/R4/MedicationRequest/{received.pk}-1").json()

    assert (resource["status"], resource["extension"][0]["valueCode"]) == (fhir_status, status)
    assert resource["statusReason"] == {"text": "why"}


def test_another_clinics_id_is_a_404_indistinguishable_from_a_missing_one(clinic, received):
    elsewhere = eps_clinic("Another practice", ods_code="B12345")

    foreign = elsewhere.api.get(f"/fhir/R4/MedicationRequest/{received.pk}-1")
    missing = elsewhere.api.get(f"/fhir/R4/MedicationRequest/{received.pk + 1000}-1")
    no_line = clinic.api.get(f"/fhir/R4/MedicationRequest/{received.pk}-9")
    nonsense = clinic.api.get("/fhir/R4/MedicationRequest/abc")

    assert {r.status_code for r in (foreign, missing, no_line, nonsense)} == {404}
    assert issues(foreign) == issues(missing) == [("error", "not-found", "")]
    assert (
        foreign.json()["issue"][0]["diagnostics"].replace(str(received.pk), str(received.pk + 1000))
        == (missing.json()["issue"][0]["diagnostics"])
    )


def test_search_by_item_number_finds_that_item(clinic, received):
    response = clinic.api.get(
        "/fhir/R4/MedicationRequest", {"identifier": f"{ITEM_NUMBER_SYSTEM}|{SECOND_ITEM}"}
    )

    bundle = response.json()
    Bundle.model_validate(bundle)
    assert (bundle["type"], bundle["total"]) == ("searchset", 1)
    assert bundle["entry"][0]["resource"]["id"] == f"{received.pk}-2"


def test_search_by_prescription_id_finds_every_item(clinic, received):
    by_system = clinic.api.get(
        "/fhir/R4/MedicationRequest", {"identifier": f"{ORDER_NUMBER_SYSTEM}|{EXAMPLE_PRESCRIPTION_ID}"}
    )
    bare = clinic.api.get("/fhir/R4/MedicationRequest", {"identifier": EXAMPLE_PRESCRIPTION_ID})

    assert [e["resource"]["id"] for e in by_system.json()["entry"]] == [
        f"{received.pk}-{n}" for n in (1, 2, 3, 4)
    ]
    assert bare.json() == by_system.json()


def test_search_never_finds_another_clinics_prescription(clinic, received):
    elsewhere = eps_clinic("Another practice", ods_code="B12345")

    response = elsewhere.api.get("/fhir/R4/MedicationRequest", {"identifier": SECOND_ITEM})

    assert response.status_code == 200
    assert response.json()["total"] == 0


@pytest.mark.parametrize(
    "query", [{}, {"identifier": ""}, {"identifier": "a\x00b"}, {"identifier": "x" * 201}]
)
def test_a_search_without_a_usable_identifier_is_refused(clinic, query):
    response = clinic.api.get("/fhir/R4/MedicationRequest", query)

    assert response.status_code == 400
    assert [issue[2] for issue in issues(response)] == ["identifier"]


def test_a_prescription_made_through_the_rest_api_reads_as_fhir_too(clinic, paracetamol):
    patient = PatientFactory(clinic=clinic.clinic)
    created = clinic.api.post(
        "/api/v1/prescriptions/",
        prescription_body(patient.pk, clinic.clinic.prescribers.first().pk, paracetamol),
        format="json",
        HTTP_IDEMPOTENCY_KEY="rest-1",
    ).json()

    resource = clinic.api.get(f"/fhir/R4/MedicationRequest/{created['id']}-1").json()

    MedicationRequest.model_validate(resource)
    assert resource["medicationCodeableConcept"]["coding"][0]["code"] == "322236009"
    assert resource["groupIdentifier"]["value"] == str(created["id"])


def test_unknown_fhir_paths_and_methods_answer_an_operation_outcome(clinic, received):
    assert issues(clinic.api.get("/fhir/R4/Patient/1"))[0][1] == "not-supported"
    response = clinic.api.delete(f"/fhir/R4/MedicationRequest/{received.pk}-1")
    assert response.status_code == 405
    assert issues(response) == [("error", "not-supported", "")]


def test_search_reads_a_constant_number_of_queries_whatever_it_finds(clinic, received):
    for _ in range(3):
        post(clinic, _another_prescription())

    def queries(identifier: str) -> tuple[int, int]:
        with CaptureQueriesContext(connection) as captured:
            total = clinic.api.get("/fhir/R4/MedicationRequest", {"identifier": identifier}).json()["total"]
        return total, len(captured)

    one_total, one = queries(f"{ORDER_NUMBER_SYSTEM}|{EXAMPLE_PRESCRIPTION_ID}")
    shared_total, shared = queries(SECOND_ITEM)

    assert (one_total, shared_total) == (4, 4)
    assert one == shared


_sequence = iter(range(1, 100))


def _another_prescription() -> dict:
    """The example as a new message and prescription that shares the second item's number, so
    searching that number finds one item of each copy."""
    message = renamed(example(REPEAT_ORDER))
    prescription_id = short_form_id(ods_code="A83008", sequence=next(_sequence))
    for _index, request in resources_of(message, "MedicationRequest"):
        request["groupIdentifier"]["value"] = prescription_id
        if request["identifier"][0]["value"] != SECOND_ITEM:
            request["identifier"][0]["value"] = str(uuid.uuid4())
    return message
