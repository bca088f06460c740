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
from prescriptions.formulary import formulary_load
from prescriptions.models import Medication, Prescription, Status
from tests.conftest import FORMULARY_FILE, prescription_body
from tests.patients.factories import ClinicFactory, PatientFactory
from tests.prescriptions.factories import MedicationFactory, PrescriberFactory, adhd_context
from tests.processes import (
    purge_queues,
    start_simulator,
    start_stripe_simulator,
    start_worker,
    stop_process,
    wait_until,
)
from tests.support.factories import pharmacist_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

JOURNEY = [
    "prescription.received",
    "prescription.approved",
    "prescription.awaiting_payment",  # private prescriptions are paid first
    "prescription.paid",
    "prescription.acknowledged",
    "prescription.dispensed",
    "prescription.shipped",
    "prescription.delivered",
]
# Stripe may confirm the payment before the worker has recorded the PaymentIntent it created:
# the prescription then goes from approved straight to paid, a path the state machine allows.
JOURNEY_PAID_BEFORE_INTENT_RECORDED = [event for event in JOURNEY if event != "prescription.awaiting_payment"]
# The timeline also records the routing decision (no consumer: the clinic is not told of it).
TIMELINE = [*JOURNEY[:4], "prescription.routed", *JOURNEY[4:]]
TIMELINE_PAID_BEFORE_INTENT_RECORDED = [
    event for event in TIMELINE if event != "prescription.awaiting_payment"
]


@pytest.fixture
def running_pipeline(live_server, settings):  # type: ignore[no-untyped-def]
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    formulary_load(path=FORMULARY_FILE)  # the checks fail closed without it
    purge_queues()
    simulator = start_simulator(webhook_url=f"{live_server.url}/webhooks/gateway/", step_delay=0.2)
    # The Stripe simulator pays every new PaymentIntent by itself.
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


def json_ready(context: dict) -> dict:
    """Dates as ISO strings, as a clinic would send them."""
    return {
        key: [{name: str(value) for name, value in entry.items()} for entry in entries]
        for key, entries in context.items()
    }


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
    medication = Medication.objects.get(code="322236009")
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
        assert types in (TIMELINE, TIMELINE_PAID_BEFORE_INTENT_RECORDED)
        detail = requests.get(
            f"{live_server.url}/api/v1/prescriptions/{prescription_id}/", headers=headers, timeout=10
        ).json()
        assert detail["status"] == "delivered"
        assert detail["tracking_number"].startswith("SIM")
        assert [event["type"] for event in detail["timeline"]] == types
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
    stimulant = Medication.objects.get(code="324907005")
    token = token_for(live_server.url, clinic)
    patient = PatientFactory(clinic=clinic)
    response = requests.post(
        f"{live_server.url}/api/v1/prescriptions/",
        json=prescription_body(
            patient.pk,
            prescriber.pk,
            stimulant,
            item={
                "quantity": "30",
                "quantity_words": "thirty",
                "days_supply": 30,
                "dose_text": "One tablet each morning",
            },
            **json_ready(adhd_context()),
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

    detail = requests.get(
        f"{live_server.url}/api/v1/prescriptions/{prescription_id}/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    assert [result["code"] for result in detail["check_results"]] == ["controlled_drug.pharmacist_approval"]
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


def post_prescription(base_url: str, token: str, key: str, body: dict) -> int:
    response = requests.post(
        f"{base_url}/api/v1/prescriptions/",
        json=body,
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_an_allergy_or_a_contraindicated_interaction_is_rejected_with_the_reason_in_the_api(
    running_pipeline,
):  # type: ignore[no-untyped-def]
    live_server, simulator, _stripe = running_pipeline
    clinic = ClinicFactory()
    prescriber = PrescriberFactory(clinic=clinic)
    token = token_for(live_server.url, clinic)
    headers = {"Authorization": f"Bearer {token}"}
    allergic = requests.post(
        f"{live_server.url}/api/v1/patients/",
        json={
            "given_name": "Sam",
            "family_name": "Example",
            "birth_date": "1990-04-02",
            "nhs_number": "9434765919",
            "address_line": "2 Sample Road",
            "postal_code": "LS1 1AA",
            "allergies": [{"substance": "penicillin", "reaction": "anaphylaxis"}],
            "current_medications": [{"name": "Phenelzine 15mg tablets"}],
        },
        headers={**headers, "Idempotency-Key": "patient-1"},
        timeout=10,
    ).json()["id"]
    amoxicillin = Medication.objects.get(code="323509004")
    sertraline = Medication.objects.get(code="321987003")

    allergy_id = post_prescription(
        live_server.url,
        token,
        "allergy-1",
        prescription_body(
            allergic,
            prescriber.pk,
            amoxicillin,
            item={"unit": "capsule", "dose_text": "One capsule three times a day", "quantity": "21"},
        ),
    )
    interaction_id = post_prescription(
        live_server.url,
        token,
        "interaction-1",
        prescription_body(
            allergic, prescriber.pk, sertraline, item={"dose_text": "One tablet a day", "quantity": "7"}
        ),
    )

    wait_until(
        lambda: (
            Prescription.objects.filter(pk__in=[allergy_id, interaction_id], status=Status.REJECTED).count()
            == 2
        ),
        seconds=30,
        what="both rejected",
    )
    allergy = requests.get(
        f"{live_server.url}/api/v1/prescriptions/{allergy_id}/", headers=headers, timeout=10
    ).json()
    interaction = requests.get(
        f"{live_server.url}/api/v1/prescriptions/{interaction_id}/", headers=headers, timeout=10
    ).json()
    assert allergy["status"] == "rejected"
    assert "allergic to penicillin" in allergy["status_reason"]
    assert {r["code"] for r in allergy["check_results"] if r["severity"] == "block"} == {"allergy.class"}
    assert interaction["status"] == "rejected"
    assert {r["code"] for r in interaction["check_results"] if r["severity"] == "block"} == {
        "interaction.contraindicated"
    }
    # What the clinic's webhook is built from: the rejection event carries the results.
    event = Event.objects.get(aggregate_id=interaction_id, type="prescription.rejected")
    assert [r["code"] for r in event.payload["checks"] if r["severity"] == "block"] == [
        "interaction.contraindicated"
    ]
    assert interaction["timeline"][-1]["payload"]["checks"] == event.payload["checks"]
    assert simulator.stats()["orders"] == 0


def test_an_early_resupply_of_a_controlled_drug_is_flagged(running_pipeline, django_user_model):  # type: ignore[no-untyped-def]
    live_server, simulator, _stripe = running_pipeline
    clinic = ClinicFactory()
    prescriber = PrescriberFactory(clinic=clinic)
    token = token_for(live_server.url, clinic)
    patient = PatientFactory(clinic=clinic)
    stimulant = Medication.objects.get(code="324907005")
    body = prescription_body(
        patient.pk,
        prescriber.pk,
        stimulant,
        item={
            "quantity": "56",
            "quantity_words": "fifty six",
            "days_supply": 28,
            "dose_text": "One tablet twice a day",
        },
        **json_ready(adhd_context()),
    )
    first = post_prescription(live_server.url, token, "cd-first", body)
    wait_until(
        lambda: Prescription.objects.get(pk=first).status == Status.AWAITING_PHARMACIST,
        seconds=30,
        what="queue",
    )
    services.prescription_review(
        prescription_id=first,
        pharmacist=pharmacist_create(username="ph"),
        decision="approved",
        reason="OK.",
    )

    second = post_prescription(live_server.url, token, "cd-second", body)

    wait_until(
        lambda: Prescription.objects.get(pk=second).status == Status.AWAITING_PHARMACIST,
        seconds=30,
        what="queue",
    )
    detail = requests.get(
        f"{live_server.url}/api/v1/prescriptions/{second}/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    early = [r for r in detail["check_results"] if r["code"] == "history.early_resupply"]
    assert len(early) == 1
    assert early[0]["severity"] == "needs_pharmacist"
    assert early[0]["message"].startswith(
        "Early re-supply of a controlled drug: 56 tablet of Methylphenidate"
    )


def test_an_nhs_prescription_with_an_exemption_is_delivered_free_and_claimed(running_pipeline):  # type: ignore[no-untyped-def]
    import datetime

    from django.utils import timezone

    live_server, simulator, stripe = running_pipeline
    clinic = ClinicFactory(jurisdiction="GB")
    prescriber = PrescriberFactory(clinic=clinic)
    medication = MedicationFactory(code="322236009")
    token = token_for(live_server.url, clinic)
    # Thirteen: under 16 (the exemption) and old enough for 500 mg paracetamol four times a day (BNFc).
    child = PatientFactory(
        clinic=clinic, birth_date=timezone.localdate() - datetime.timedelta(days=365 * 13 + 30)
    )
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
        "prescription.routed",
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
