"""The whole journey on real parts: OAuth2 token → API → outbox → Celery worker → checks →
FHIR dispatch over HTTP to the gateway simulator → acknowledgement → signed webhooks →
delivered. Nothing in between is mocked."""

from __future__ import annotations

import pytest
import requests
from oauth2_provider.models import Application

from events.models import Event
from patients.models import ClinicClient
from pharmacy.models import Dispatch
from prescriptions import services
from prescriptions.models import Prescription, Status
from tests.conftest import prescription_body
from tests.patients.factories import ClinicFactory, PatientFactory
from tests.prescriptions.factories import MedicationFactory, PrescriberFactory
from tests.processes import purge_queues, start_simulator, start_worker, stop_process, wait_until
from tests.support.factories import pharmacist_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

JOURNEY = [
    "prescription.received",
    "prescription.approved",
    "prescription.acknowledged",
    "prescription.dispensed",
    "prescription.shipped",
    "prescription.delivered",
]


@pytest.fixture
def running_pipeline(live_server, settings):  # type: ignore[no-untyped-def]
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    purge_queues()
    simulator = start_simulator(webhook_url=f"{live_server.url}/webhooks/gateway/", step_delay=0.2)
    worker = start_worker(gateway_url=simulator.url)
    try:
        yield live_server, simulator
    finally:
        stop_process(worker)
        simulator.stop()


def token_for(base_url: str, clinic) -> str:  # type: ignore[no-untyped-def]
    secret = "journey-secret-0123456789"
    application = Application(
        name="journey",
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        client_secret=secret,
    )
    application.save()
    ClinicClient.objects.create(clinic=clinic, application=application)
    response = requests.post(
        f"{base_url}/oauth/token/",
        data={"grant_type": "client_credentials"},
        auth=(application.client_id, secret),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def test_prescriptions_posted_through_the_api_reach_delivered(running_pipeline):  # type: ignore[no-untyped-def]
    live_server, simulator = running_pipeline
    clinic = ClinicFactory()
    prescriber = PrescriberFactory(clinic=clinic)
    medication = MedicationFactory(code="322236009")
    token = token_for(live_server.url, clinic)
    headers = {"Authorization": f"Bearer {token}"}

    ids = []
    for index in range(5):
        patient = PatientFactory(clinic=clinic)
        response = requests.post(
            f"{live_server.url}/api/v1/prescriptions/",
            json=prescription_body(patient.pk, prescriber.pk, medication),
            headers={**headers, "Idempotency-Key": f"journey-{index}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])

    wait_until(
        lambda: Prescription.objects.filter(pk__in=ids, status=Status.DELIVERED).count() == 5,
        seconds=90,
        what="five prescriptions delivered",
    )
    stats = simulator.stats()
    assert stats["orders"] == 5
    for prescription_id in ids:
        types = list(
            Event.objects.filter(aggregate_type="prescription", aggregate_id=prescription_id)
            .order_by("sequence")
            .values_list("type", flat=True)
        )
        assert types == JOURNEY
        detail = requests.get(
            f"{live_server.url}/api/v1/prescriptions/{prescription_id}/", headers=headers, timeout=10
        ).json()
        assert detail["status"] == "delivered"
        assert detail["tracking_number"].startswith("SIM")
        assert [event["type"] for event in detail["timeline"]] == JOURNEY
    keys = set(Dispatch.objects.filter(prescription_id__in=ids).values_list("idempotency_key", flat=True))
    assert {str(key) for key in keys} == set(stats["orders_by_key"])


def test_a_controlled_drug_waits_for_a_pharmacist_and_is_dispatched_only_after_approval(
    running_pipeline, django_user_model
):  # type: ignore[no-untyped-def]
    live_server, simulator = running_pipeline
    clinic = ClinicFactory()
    prescriber = PrescriberFactory(clinic=clinic)
    stimulant = MedicationFactory(
        code="324907005", name="Methylphenidate", strength="10mg", controlled_schedule="2"
    )
    token = token_for(live_server.url, clinic)
    patient = PatientFactory(clinic=clinic)
    response = requests.post(
        f"{live_server.url}/api/v1/prescriptions/",
        json=prescription_body(
            patient.pk,
            prescriber.pk,
            stimulant,
            item={"quantity": "30", "days_supply": 30, "dose_text": "One tablet each morning"},
        ),
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "cd-1"},
        timeout=10,
    )
    prescription_id = response.json()["id"]

    wait_until(
        lambda: Prescription.objects.get(pk=prescription_id).status == Status.AWAITING_PHARMACIST,
        seconds=30,
        what="the pharmacist queue",
    )
    assert simulator.stats()["orders"] == 0
    assert not Dispatch.objects.filter(prescription_id=prescription_id).exists()

    pharmacist = pharmacist_create(username="pharmacist-e2e")
    services.prescription_review(
        prescription_id=prescription_id,
        pharmacist=pharmacist,
        decision="approved",
        reason="Stable dose, monitoring up to date.",
    )

    wait_until(
        lambda: Prescription.objects.get(pk=prescription_id).status == Status.DELIVERED,
        seconds=60,
        what="delivery after approval",
    )
    assert simulator.stats()["orders"] == 1
