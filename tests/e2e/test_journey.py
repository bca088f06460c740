"""The whole journey on real parts: OAuth2 token → API → outbox → Celery worker → checks →
FHIR dispatch over HTTP to the gateway simulator → acknowledgement → signed webhooks →
delivered. Nothing in between is mocked."""

from __future__ import annotations

import pytest
import requests
from oauth2_provider.models import Application

from billing.models import ClaimItem, NhsCharge, Payment
from billing.services import nhs
from events.models import Event
from patients.models import ClinicClient
from pharmacy.models import Dispatch
from prescriptions import services
from prescriptions.models import Prescription, Status
from tests.conftest import prescription_body
from tests.patients.factories import ClinicFactory, PatientFactory
from tests.prescriptions.factories import MedicationFactory, PrescriberFactory
from tests.processes import (
    purge_queues,
    start_simulator,
    start_stripe_simulator,
    start_worker,
    stop_process,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

JOURNEY = [
    "prescription.received",
    "prescription.approved",
    "prescription.awaiting_payment",  # billing (issue 4): private prescriptions are paid first
    "prescription.paid",
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
    # Billing (issue 4): the Stripe simulator pays every new PaymentIntent by itself.
    stripe = start_stripe_simulator(
        webhook_url=f"{live_server.url}/webhooks/stripe/", auto_confirm=True, auto_confirm_delay=0.2
    )
    worker = start_worker(gateway_url=simulator.url, extra_env={"STRIPE_API_BASE": stripe.url})
    try:
        yield live_server, simulator, stripe
    finally:
        stop_process(worker)
        simulator.stop()
        stripe.stop()


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
    live_server, simulator, stripe = running_pipeline
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
    # Each paid once, captured at Stripe: one PaymentIntent per prescription, all succeeded.
    payments = Payment.objects.filter(prescription_id__in=ids)
    assert sorted(payments.values_list("status", flat=True)) == ["succeeded"] * 5
    stripe_stats = stripe.stats()
    assert stripe_stats["intents_by_key"] == {p.idempotency_key: p.stripe_payment_intent_id for p in payments}
    assert set(stripe_stats["intent_statuses"].values()) == {"succeeded"}


def test_a_controlled_drug_waits_for_a_pharmacist_and_is_dispatched_only_after_approval(
    running_pipeline, django_user_model
):  # type: ignore[no-untyped-def]
    live_server, simulator, _stripe = running_pipeline
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

    pharmacist = django_user_model.objects.create_user("pharmacist-e2e", is_staff=True)
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


def test_an_nhs_prescription_with_an_exemption_is_delivered_free_and_claimed(running_pipeline):  # type: ignore[no-untyped-def]
    import datetime

    from django.utils import timezone

    live_server, simulator, stripe = running_pipeline
    clinic = ClinicFactory(jurisdiction="GB")
    prescriber = PrescriberFactory(clinic=clinic)
    medication = MedicationFactory(code="322236009")
    token = token_for(live_server.url, clinic)
    child = PatientFactory(clinic=clinic, birth_date=timezone.localdate() - datetime.timedelta(days=365 * 10))
    body = prescription_body(
        child.pk, prescriber.pk, medication, funding="nhs", nhs_exemption={"category": "age_under_16"}
    )

    response = requests.post(
        f"{live_server.url}/api/v1/prescriptions/",
        json=body,
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "nhs-1"},
        timeout=10,
    )
    prescription_id = response.json()["id"]
    wait_until(
        lambda: Prescription.objects.get(pk=prescription_id).status == Status.DELIVERED,
        seconds=60,
        what="the NHS prescription delivered",
    )
    batch = nhs.claim_batch_build(month=timezone.now().date())

    assert response.status_code == 201, response.text
    types = list(
        Event.objects.filter(aggregate_type="prescription", aggregate_id=prescription_id)
        .order_by("sequence")
        .values_list("type", flat=True)
    )
    assert types == [
        "prescription.received",
        "prescription.approved",
        "prescription.nhs_funded",
        "prescription.acknowledged",
        "prescription.dispensed",
        "prescription.shipped",
        "prescription.delivered",
    ]
    charge = NhsCharge.objects.get(prescription_id=prescription_id)
    assert (charge.exemption_category, charge.exemption_verified, charge.total_minor) == (
        "age_under_16",
        True,
        0,
    )
    assert not Payment.objects.filter(prescription_id=prescription_id).exists()
    assert stripe.stats()["requests"] == 0
    assert list(
        ClaimItem.objects.filter(batch=batch).values_list("prescription_id", "charge_collected_minor")
    ) == [(prescription_id, 0)]
