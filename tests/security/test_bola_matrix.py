"""Broken object-level authorisation, walked from the OpenAPI schema.

Every operation in /api/schema/ is attacked by: clinic B's token against clinic A's
objects, no token, an expired token, a revoked client's token, and a token without the
operation's scope. Each answer must be 401/403/404 (or, for B's lists, only B's rows) and
nothing in the database may change. A new endpoint is attacked as soon as it is in the
schema; one with a path parameter or a body this file does not know fails loudly.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import resolve
from rest_framework.test import APIClient

from events.models import Event
from patients.models import Allergy, IdempotencyKey, Patient
from patients.services import clinic_client_revoke
from prescriptions.models import Prescription, PrescriptionItem
from prescriptions.services import prescription_create
from tests.conftest import ClinicSetup, prescription_body
from tests.patients.factories import AccessTokenFactory, AllergyFactory, PatientFactory
from tests.prescriptions.factories import MedicationFactory

pytestmark = pytest.mark.django_db

# Operations any clinic client may call whatever its scopes: shared reference data only.
NO_SCOPE_NEEDED = {("get", "/api/v1/medications/")}


@dataclass
class Victim:
    setup: ClinicSetup
    patient: Patient
    prescription: Prescription

    def object_id(self, path: str) -> int:
        resource = path.removeprefix("/api/v1/").split("/")[0]
        ids = {"patients": self.patient.pk, "prescriptions": self.prescription.pk}
        assert resource in ids, f"{path}: tell the BOLA matrix which clinic-A object to attack"
        return ids[resource]

    def body(self, method: str, path: str) -> dict[str, Any] | None:
        if method == "get":
            return None
        bodies = {
            "/api/v1/patients/": {"given_name": "Eve", "family_name": "Intruder", "birth_date": "1990-01-01"},
            "/api/v1/prescriptions/": prescription_body(
                self.patient.pk, self.setup.prescriber.pk, MedicationFactory(code="322236009")
            ),
            "/api/v1/prescriptions/{id}/cancel/": {"reason": "attack"},
        }
        assert path in bodies, f"{method.upper()} {path}: give the BOLA matrix a request body"
        return bodies[path]


@pytest.fixture
def victim(clinic_a) -> Victim:  # type: ignore[no-untyped-def]
    patient = PatientFactory(clinic=clinic_a.clinic)
    AllergyFactory(patient=patient)
    item = {
        "medication": MedicationFactory(),
        "dose_text": "one",
        "quantity": 1,
        "unit": "tablet",
        "days_supply": 1,
    }
    prescription = prescription_create(
        clinic=clinic_a.clinic, patient=patient, prescriber=clinic_a.prescriber, items=[item]
    )
    return Victim(setup=clinic_a, patient=patient, prescription=prescription)


def _operations() -> list[tuple[str, str]]:
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    operations = [
        (method, path)
        for path, item in schema["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]
    assert len(operations) >= 9
    return operations


def _snapshot() -> dict[str, Any]:
    return {
        "patients": list(Patient.objects.order_by("pk").values_list("pk", "clinic_id", "sex")),
        "allergies": Allergy.objects.count(),
        "prescriptions": list(
            Prescription.objects.order_by("pk").values_list("pk", "status", "status_reason")
        ),
        "items": PrescriptionItem.objects.count(),
        "events": Event.objects.count(),
        "idempotency_keys": IdempotencyKey.objects.count(),
    }


def _call(client: APIClient, method: str, path: str, victim: Victim, key: str) -> Any:
    url = re.sub(r"\{[^}]+\}", lambda _match: str(victim.object_id(path)), path)
    body = victim.body(method, path)
    if method == "get":
        return client.get(url)
    return getattr(client, method)(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def _client(token: str | None) -> APIClient:
    client = APIClient()
    if token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _attack_every_operation(
    victim: Victim, client: APIClient, expected: Callable[[str, str], set[int]], name: str
) -> None:
    before = _snapshot()
    failures = []
    for index, (method, path) in enumerate(_operations()):
        response = _call(client, method, path, victim, key=f"bola-{name}-{index}")
        allowed = expected(method, path)
        if response.status_code not in allowed:
            failures.append(f"{method.upper()} {path}: {response.status_code}, wanted {sorted(allowed)}")
        elif response.status_code >= 400:
            assert response["Content-Type"] == "application/problem+json"
    assert failures == []
    assert _snapshot() == before


def test_no_token_is_refused_on_every_operation(victim):
    _attack_every_operation(victim, _client(None), lambda method, path: {401}, "anonymous")


def test_an_expired_token_is_refused_on_every_operation(victim):
    expired = AccessTokenFactory(
        application=victim.setup.clinic.clients.get().application,
        expires=datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1),
    )
    _attack_every_operation(victim, _client(expired.token), lambda method, path: {401}, "expired")


def test_a_revoked_clients_token_is_refused_on_every_operation_at_once(victim):
    token = AccessTokenFactory(
        application=victim.setup.clinic.clients.get().application, token="kept-copy-x" * 3
    )
    assert _client(token.token).get("/api/v1/patients/").status_code == 200
    clinic_client_revoke(clinic_client=victim.setup.clinic.clients.get(), actor="test")
    # Even a token row that survived (e.g. restored from a backup) is refused.
    AccessTokenFactory(application=victim.setup.clinic.clients.get().application, token=token.token)

    _attack_every_operation(victim, _client(token.token), lambda method, path: {401}, "revoked")


def test_a_token_without_the_operations_scope_is_refused_on_every_operation(victim):
    def expected(method: str, path: str) -> set[int]:
        return {200} if (method, path) in NO_SCOPE_NEEDED else {403}

    token = AccessTokenFactory(application=victim.setup.clinic.clients.get().application, scope="")
    _attack_every_operation(victim, _client(token.token), expected, "no-scope")


def test_each_scope_opens_only_its_own_resource(victim):
    token = AccessTokenFactory(
        application=victim.setup.clinic.clients.get().application, scope="patients:read"
    )
    client = _client(token.token)

    assert client.get("/api/v1/patients/").status_code == 200
    assert client.get("/api/v1/prescriptions/").status_code == 403
    assert client.post("/api/v1/patients/", {}, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 403


def test_another_clinics_token_reaches_none_of_clinic_as_objects(victim, clinic_b):
    def expected(method: str, path: str) -> set[int]:
        if "{" in path:
            return {404}
        if method == "get":
            return {200}
        # Creating in its own clinic is allowed; naming A's objects in the body is not.
        return {201} if path == "/api/v1/patients/" else {400}

    _attack_every_operation_allowing_own_creation(victim, clinic_b, expected)


def _attack_every_operation_allowing_own_creation(
    victim: Victim, attacker: ClinicSetup, expected: Callable[[str, str], set[int]]
) -> None:
    foreign_ids = {
        "patient-list": victim.patient.pk,
        "prescription-list": victim.prescription.pk,
        "prescriber-list": victim.setup.prescriber.pk,
        "medication-list": None,  # the formulary is shared reference data
    }
    before_a = _clinic_snapshot(victim.setup)
    failures = []
    for index, (method, path) in enumerate(_operations()):
        response = _call(attacker.api, method, path, victim, key=f"bola-b-{index}")
        if response.status_code not in expected(method, path):
            failures.append(f"{method.upper()} {path}: {response.status_code}")
        if method == "get" and "{" not in path:
            url_name = resolve(path).url_name
            assert url_name in foreign_ids, f"{path}: tell the BOLA matrix which clinic-A row it lists"
            listed = {row["id"] for row in response.json()["results"]}
            assert foreign_ids[url_name] not in listed, path
    assert failures == []
    assert _clinic_snapshot(victim.setup) == before_a


def _clinic_snapshot(setup: ClinicSetup) -> dict[str, Any]:
    return {
        "patients": list(Patient.objects.filter(clinic=setup.clinic).order_by("pk").values_list("pk", "sex")),
        "prescriptions": list(
            Prescription.objects.filter(clinic=setup.clinic).order_by("pk").values_list("pk", "status")
        ),
        "events": Event.objects.filter(clinic_id=setup.clinic.pk).count(),
        "idempotency_keys": IdempotencyKey.objects.filter(clinic=setup.clinic).count(),
    }


def test_naming_another_clinics_patient_answers_exactly_like_a_patient_that_does_not_exist(victim, clinic_b):
    medication = MedicationFactory(code="322236009")
    foreign = prescription_body(victim.patient.pk, clinic_b.prescriber.pk, medication)
    missing = prescription_body(999_999_999, clinic_b.prescriber.pk, medication)

    foreign_response = clinic_b.api.post(
        "/api/v1/prescriptions/", foreign, format="json", HTTP_IDEMPOTENCY_KEY="f"
    )
    missing_response = clinic_b.api.post(
        "/api/v1/prescriptions/", missing, format="json", HTTP_IDEMPOTENCY_KEY="m"
    )

    assert foreign_response.status_code == missing_response.status_code == 400
    assert foreign_response.json()["errors"] == [
        {**error, "detail": error["detail"].replace("999999999", str(victim.patient.pk))}
        for error in missing_response.json()["errors"]
    ]
    assert Prescription.objects.filter(clinic=clinic_b.clinic).count() == 0


def test_another_clinics_object_and_a_missing_one_get_the_same_404(victim, clinic_b):
    foreign = clinic_b.api.get(f"/api/v1/patients/{victim.patient.pk}/")
    missing = clinic_b.api.get("/api/v1/patients/999999999/")

    assert foreign.status_code == missing.status_code == 404
    assert {**foreign.json(), "instance": ""} == {**missing.json(), "instance": ""}
