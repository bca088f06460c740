"""The Idempotency-Key contract on the clinic API's POSTs (DESIGN invariant 1)."""

from __future__ import annotations

import datetime
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from django.db import connection
from django.utils import timezone

from accounts.idempotency import _lock_id
from events.models import Event
from patients.models import IdempotencyKey, Patient
from prescriptions.models import Prescription
from tests.conftest import prescription_body
from tests.patients.factories import PatientFactory

pytestmark = pytest.mark.django_db

PRESCRIPTIONS = "/api/v1/prescriptions/"
PATIENTS = "/api/v1/patients/"


def post(setup, body, key="key-1", url=PRESCRIPTIONS):  # type: ignore[no-untyped-def]
    if key is None:
        return setup.api.post(url, body, format="json")
    return setup.api.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def received_events() -> int:
    return Event.objects.filter(type="prescription.received").count()


def patient_body(**overrides):  # type: ignore[no-untyped-def]
    return {"given_name": "Ada", "family_name": "Lovelace", "birth_date": "1990-01-02", **overrides}


# --- the header itself ---------------------------------------------------------------------


@pytest.mark.parametrize("url", [PRESCRIPTIONS, PATIENTS])
def test_a_post_without_an_idempotency_key_is_refused_and_stores_nothing(
    clinic_a, patient_a, paracetamol, url
):  # type: ignore[no-untyped-def]
    body = (
        prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)
        if url == PRESCRIPTIONS
        else patient_body()
    )

    response = post(clinic_a, body, key=None, url=url)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/idempotency-key-missing"
    assert problem["status"] == 400
    assert problem["instance"] == url
    assert Prescription.objects.count() == 0
    assert Patient.objects.count() == 1  # patient_a only
    assert Event.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0


@pytest.mark.parametrize(
    "key",
    ["k" * 256, "ké", "a\tb", "line\nbreak", "\x7f"],
    ids=["256-chars", "non-ascii", "tab", "newline", "delete-char"],
)
def test_an_idempotency_key_that_is_too_long_or_not_printable_ascii_is_refused(
    clinic_a, patient_a, paracetamol, key
):  # type: ignore[no-untyped-def]
    response = post(clinic_a, prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol), key=key)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/idempotency-key-invalid"
    assert Prescription.objects.count() == 0
    assert Event.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0


def test_an_idempotency_key_of_exactly_255_printable_characters_is_accepted(clinic_a, patient_a, paracetamol):
    key = ("~ aZ09!" * 40)[:255]

    response = post(clinic_a, prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol), key=key)

    assert response.status_code == 201, response.content
    assert IdempotencyKey.objects.get().key == key
    assert Prescription.objects.count() == 1


# --- replay, reuse, scope -------------------------------------------------------------------


def test_the_same_key_and_body_replays_the_first_response_and_creates_nothing_more(
    clinic_a, patient_a, paracetamol
):  # type: ignore[no-untyped-def]
    body = prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)
    first = post(clinic_a, body)

    second = post(clinic_a, body)

    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    assert second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert Prescription.objects.count() == 1
    assert received_events() == 1
    assert IdempotencyKey.objects.count() == 1


def test_the_same_key_and_body_replays_a_patient_registration(clinic_a):
    first = post(clinic_a, patient_body(), url=PATIENTS)

    second = post(clinic_a, patient_body(), url=PATIENTS)

    assert first.status_code == 201
    assert second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert Patient.objects.count() == 1
    assert Event.objects.filter(type="patient.registered").count() == 1


def test_the_same_key_with_a_different_body_is_unprocessable_and_creates_nothing(
    clinic_a, patient_a, paracetamol
):  # type: ignore[no-untyped-def]
    post(clinic_a, prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol))

    response = post(
        clinic_a, prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol, note="changed")
    )

    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/idempotency-key-reused"
    assert "Idempotent-Replayed" not in response
    assert Prescription.objects.count() == 1
    assert Prescription.objects.get().note == ""
    assert received_events() == 1


def test_the_same_key_on_another_endpoint_is_unprocessable(clinic_a, patient_a, paracetamol):
    post(clinic_a, prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol), key="shared")

    response = post(clinic_a, patient_body(), key="shared", url=PATIENTS)

    assert response.status_code == 422
    assert response.json()["type"] == "/problems/idempotency-key-reused"
    assert Patient.objects.count() == 1  # patient_a only
    assert Event.objects.filter(type="patient.registered").count() == 0


def test_keys_are_scoped_per_clinic_so_another_clinic_may_use_the_same_key(
    clinic_a, clinic_b, patient_a, paracetamol
):  # type: ignore[no-untyped-def]
    patient_b = PatientFactory(clinic=clinic_b.clinic)
    from_a = post(clinic_a, prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol), key="same")

    from_b = post(clinic_b, prescription_body(patient_b.pk, clinic_b.prescriber.pk, paracetamol), key="same")

    assert from_a.status_code == 201
    assert from_b.status_code == 201
    assert "Idempotent-Replayed" not in from_b
    assert from_b.json()["id"] != from_a.json()["id"]
    assert from_b.json()["patient"] == patient_b.pk
    assert Prescription.objects.get(pk=from_b.json()["id"]).clinic == clinic_b.clinic
    assert Prescription.objects.count() == 2
    assert sorted(IdempotencyKey.objects.values_list("clinic__name", flat=True)) == ["Clinic A", "Clinic B"]


def test_a_request_that_fails_validation_stores_no_key_so_a_corrected_retry_succeeds(
    clinic_a, patient_a, paracetamol
):  # type: ignore[no-untyped-def]
    invalid = post(clinic_a, prescription_body(patient_a.pk, 999999, paracetamol), key="retry-me")
    assert invalid.status_code == 400
    assert IdempotencyKey.objects.count() == 0

    valid = post(
        clinic_a, prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol), key="retry-me"
    )

    assert valid.status_code == 201
    assert "Idempotent-Replayed" not in valid
    assert valid.json()["prescriber"] == clinic_a.prescriber.pk
    assert Prescription.objects.count() == 1
    assert json.loads(IdempotencyKey.objects.get().response_body)["id"] == valid.json()["id"]


def test_an_expired_key_is_treated_as_new(clinic_a, patient_a, paracetamol):
    body = prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)
    first = post(clinic_a, body)
    IdempotencyKey.objects.update(expires_at=timezone.now() - datetime.timedelta(seconds=1))

    second = post(clinic_a, body)

    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second
    assert second.json()["id"] != first.json()["id"]
    assert Prescription.objects.count() == 2
    assert received_events() == 2
    stored = IdempotencyKey.objects.get()
    assert json.loads(stored.response_body)["id"] == second.json()["id"]
    assert stored.expires_at > timezone.now()


# --- in flight -----------------------------------------------------------------------------


def other_connection() -> psycopg.Connection:
    params = connection.get_connection_params()
    wanted = {
        name: params[name] for name in ("dbname", "host", "port", "user", "password") if params.get(name)
    }
    return psycopg.connect(**wanted)


@pytest.mark.django_db(transaction=True)
def test_a_key_whose_first_request_is_still_running_gets_409_and_stores_nothing(
    clinic_a, patient_a, paracetamol
):  # type: ignore[no-untyped-def]
    body = prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)
    with other_connection() as first_request:
        # psycopg opens a transaction on the first statement: the lock is held until rollback.
        first_request.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_id(clinic_a.clinic, "in-flight")])

        response = post(clinic_a, body, key="in-flight")

        assert response.status_code == 409
        assert response["Retry-After"] == "1"
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["type"] == "/problems/idempotency-key-in-flight"
        assert Prescription.objects.count() == 0
        assert Event.objects.count() == 0
        assert IdempotencyKey.objects.count() == 0
        first_request.rollback()

    retried = post(clinic_a, body, key="in-flight")

    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried
    assert Prescription.objects.count() == 1


# --- concurrency through a real server -----------------------------------------------------


@pytest.fixture
def roomy_live_server(live_server):  # type: ignore[no-untyped-def]
    # Django's test server listens with a backlog of 10; fifty simultaneous connects overflow
    # it and the kernel resets some of them before the app sees them. Production (gunicorn)
    # listens with 2048. Calling listen() again on the open socket widens the queue.
    live_server.thread.httpd.socket.listen(128)
    return live_server


def post_concurrently(url: str, token: str, bodies: list[dict], key: str) -> list[requests.Response]:
    barrier = threading.Barrier(len(bodies))

    def send(body: dict) -> requests.Response:
        barrier.wait(timeout=30)
        return requests.post(
            url,
            json=body,
            timeout=60,
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
        )

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(send, bodies))


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_identical_posts_create_exactly_one_prescription(
    roomy_live_server, clinic_a, patient_a, paracetamol
):  # type: ignore[no-untyped-def]
    body = prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)

    responses = post_concurrently(roomy_live_server.url + PRESCRIPTIONS, clinic_a.token, [body] * 50, "storm")

    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {201, 409}, statuses
    assert 201 in statuses
    created = [response.json() for response in responses if response.status_code == 201]
    assert {body["id"] for body in created} == {Prescription.objects.get().pk}
    assert all(body == created[0] for body in created)
    assert all(
        response.json()["type"] == "/problems/idempotency-key-in-flight"
        for response in responses
        if response.status_code == 409
    )
    assert Prescription.objects.count() == 1
    assert received_events() == 1
    assert IdempotencyKey.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_different_posts_with_one_key_create_exactly_one_prescription(
    roomy_live_server, clinic_a, patient_a, paracetamol
):  # type: ignore[no-untyped-def]
    bodies = [
        prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol, note=f"variant {index}")
        for index in range(20)
    ]

    responses = post_concurrently(roomy_live_server.url + PRESCRIPTIONS, clinic_a.token, bodies, "contested")

    statuses = sorted(response.status_code for response in responses)
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {201, 409, 422}, statuses
    winner = next(response.json() for response in responses if response.status_code == 201)
    prescription = Prescription.objects.get()
    assert winner["id"] == prescription.pk
    assert prescription.note == winner["note"]
    assert received_events() == 1
    assert IdempotencyKey.objects.count() == 1
