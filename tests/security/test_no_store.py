"""Every API response (and the patient status page) carries Cache-Control: no-store, whatever
the endpoint, method or outcome: patient data is never kept by a browser, proxy or client cache."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from prescriptions.models import Prescription
from prescriptions.status_link import status_link_url
from tests.conftest import prescription_body
from tests.patients.factories import PatientFactory

pytestmark = pytest.mark.django_db


def _operations() -> list[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return sorted(
        (method, path)
        for path, operations in schema["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "patch", "delete"}
    )


def _assert_no_store(response) -> None:  # type: ignore[no-untyped-def]
    directives = {part.strip() for part in response.get("Cache-Control", "").split(",")}
    assert "no-store" in directives, (response.request["PATH_INFO"], response.status_code)


def test_every_documented_operation_answers_no_store_on_success_and_on_error(clinic_a, paracetamol):
    patient = PatientFactory(clinic=clinic_a.clinic)
    body = prescription_body(patient.pk, clinic_a.prescriber.pk, paracetamol)
    created = clinic_a.api.post("/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="rx-1")
    bodies = {
        "/api/v1/patients/": {"given_name": "Ann", "family_name": "Example", "birth_date": "1980-01-01"},
        "/api/v1/prescriptions/": body,
        "/api/v1/prescriptions/{id}/cancel/": {"reason": "changed treatment"},
    }
    ids = {"/api/v1/patients/{id}/": patient.pk}
    seen = []
    for method, path in _operations():
        url = path.replace("{id}", str(ids.get(path, created.json()["id"])))
        good = getattr(clinic_a.api, method)(
            url, bodies.get(path, {}), format="json", HTTP_IDEMPOTENCY_KEY=f"ok-{method}-{path}"
        )
        missing = getattr(clinic_a.api, method)(path.replace("{id}", "999999"), {}, format="json")
        unauthenticated = getattr(clinic_a.api.__class__(), method)(url, {}, format="json")

        assert good.status_code < 400, (method, path, good.status_code)
        assert unauthenticated.status_code == 401
        for response in (good, missing, unauthenticated):
            _assert_no_store(response)
        seen.append((method, path))
    assert ("get", "/api/v1/patients/{id}/") in seen
    assert ("post", "/api/v1/prescriptions/") in seen


def test_fhir_answers_are_no_store(clinic_a):
    search = clinic_a.api.get(
        "/fhir/R4/MedicationRequest?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919"
    )
    refused = clinic_a.api.generic(
        "POST", "/fhir/R4/$process-message", b"{}", content_type="application/fhir+json"
    )
    unknown = clinic_a.api.get("/fhir/R4/Patient/1")

    assert search.status_code < 500
    assert 400 <= refused.status_code < 500
    for response in (search, refused, unknown):
        _assert_no_store(response)


def test_the_patient_status_page_is_no_store(client, clinic_a, paracetamol):
    patient = PatientFactory(clinic=clinic_a.clinic)
    body = prescription_body(patient.pk, clinic_a.prescriber.pk, paracetamol)
    clinic_a.api.post("/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="rx-1")
    path = status_link_url(prescription=Prescription.objects.get()).split("://", 1)[1].split("/", 1)[1]

    page = client.get(f"/{path}")
    forged = client.get("/track/not-a-token/")

    assert (page.status_code, forged.status_code) == (200, 404)
    _assert_no_store(page)
    _assert_no_store(forged)
