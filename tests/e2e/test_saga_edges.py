"""The saga's outward edges on real parts (worker, gateway and Stripe simulators, a clinic's
webhook receiver): signed clinic webhooks for every status change, and a cancel after the
pharmacy acknowledged the order compensated at the gateway, refunded once and notified."""

from __future__ import annotations

import time

import pytest
import requests

from billing.models import Refund
from events.models import ClinicWebhookEndpoint, Event, WebhookDelivery
from events.services import outbox_relay_all
from notifications.models import Notification
from pharmacy.models import GatewayCancellation
from prescriptions.formulary import formulary_load
from prescriptions.models import Medication, Prescription, Status
from tests.conftest import FORMULARY_FILE, prescription_body
from tests.e2e.test_journey import JOURNEY, token_for
from tests.events.receiver import receiver_start, signature_valid
from tests.patients.factories import ClinicFactory, PatientFactory
from tests.prescriptions.factories import PrescriberFactory
from tests.processes import (
    purge_queues,
    start_simulator,
    start_stripe_simulator,
    start_worker,
    stop_process,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SECRET = "whsec_journey"
FAST_WEBHOOK_RETRIES = {"CLINIC_WEBHOOK_BACKOFF_SECONDS": "0.2", "CLINIC_WEBHOOK_BACKOFF_MAX_SECONDS": "1"}


def pipeline(live_server, *, step_delay: float):  # type: ignore[no-untyped-def]
    formulary_load(path=FORMULARY_FILE)
    purge_queues()
    simulator = start_simulator(webhook_url=f"{live_server.url}/webhooks/gateway/", step_delay=step_delay)
    stripe = start_stripe_simulator(
        webhook_url=f"{live_server.url}/webhooks/stripe/", auto_confirm=True, auto_confirm_delay=0.2
    )
    worker = start_worker(
        gateway_url=simulator.url, extra_env={"STRIPE_API_BASE": stripe.url, **FAST_WEBHOOK_RETRIES}
    )
    return simulator, stripe, worker


@pytest.fixture
def receiver():  # type: ignore[no-untyped-def]
    running = receiver_start()
    yield running
    running.stop()


def submit(live_server, clinic, *, email: str = "") -> tuple[int, dict[str, str]]:  # type: ignore[no-untyped-def]
    token = token_for(live_server.url, clinic)
    headers = {"Authorization": f"Bearer {token}"}
    patient = PatientFactory(clinic=clinic, email=email)
    response = requests.post(
        f"{live_server.url}/api/v1/prescriptions/",
        json=prescription_body(
            patient.pk, PrescriberFactory(clinic=clinic).pk, Medication.objects.get(code="322236009")
        ),
        headers={**headers, "Idempotency-Key": "saga-edge-1"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], headers


def test_a_clinic_receiver_gets_every_status_change_of_a_journey_signed_and_in_sequence(
    live_server, settings, receiver
):  # type: ignore[no-untyped-def]
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    simulator, stripe, worker = pipeline(live_server, step_delay=0.2)
    try:
        clinic = ClinicFactory()
        ClinicWebhookEndpoint.objects.create(clinic=clinic, url=receiver.url, secret=SECRET)
        receiver.statuses = [500]  # the clinic fails once: that delivery is retried
        prescription_id, _ = submit(live_server, clinic)
        # Until the worker has also recorded the last answer: the receiver sees the POST before
        # the delivery row is marked delivered, and stopping the worker in between loses that.
        wait_until(
            lambda: (
                # The failed delivery's retry is owed work with a due time: publish it as beat would.
                outbox_relay_all() >= 0
                and len(receiver.accepted()) == len(JOURNEY)
                and WebhookDelivery.objects.filter(status="delivered").count() == len(JOURNEY)
            ),
            seconds=90,
            what="every status change delivered and recorded",
        )
    finally:
        stop_process(worker)
        simulator.stop()
        stripe.stop()

    for item in receiver.received:
        assert signature_valid(header=item.headers["scriptline-signature"], body=item.body, secret=SECRET)
    accepted = sorted(receiver.accepted(), key=lambda payload: payload["prescription"]["sequence"])
    assert [payload["type"] for payload in accepted] == JOURNEY
    # Ordered by sequence, which skips the internal steps a clinic is not sent (the routing decision).
    sent = [
        event.sequence
        for event in Event.objects.filter(
            aggregate_type="prescription", aggregate_id=prescription_id, type__in=JOURNEY
        )
    ]
    assert [payload["prescription"]["sequence"] for payload in accepted] == sorted(sent)
    assert {payload["prescription"]["id"] for payload in accepted} == {prescription_id}
    assert accepted[-1]["prescription"]["status"] == "delivered"
    assert accepted[-1]["prescription"]["tracking_number"].startswith("SIM")
    assert len(receiver.received) == len(JOURNEY) + 1
    assert WebhookDelivery.objects.filter(status="delivered").count() == len(JOURNEY)
    assert sorted(WebhookDelivery.objects.values_list("attempts", flat=True)) == [1] * (len(JOURNEY) - 1) + [
        2
    ]


def test_a_cancel_after_acknowledgement_reaches_cancelled_with_one_gateway_cancellation_and_one_refund(
    live_server, settings, receiver
):  # type: ignore[no-untyped-def]
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    # The pharmacy takes a minute to dispense: long enough to cancel in between.
    simulator, stripe, worker = pipeline(live_server, step_delay=60)
    try:
        clinic = ClinicFactory()
        ClinicWebhookEndpoint.objects.create(clinic=clinic, url=receiver.url, secret=SECRET)
        prescription_id, headers = submit(live_server, clinic, email="pat@example.test")
        wait_until(
            lambda: Prescription.objects.filter(pk=prescription_id, status=Status.ACKNOWLEDGED).exists(),
            seconds=60,
            what="acknowledged by the pharmacy",
        )
        url = f"{live_server.url}/api/v1/prescriptions/{prescription_id}/cancel/"
        first = requests.post(url, json={"reason": "Dose changed"}, headers=headers, timeout=10)
        again = requests.post(url, json={"reason": "Dose changed"}, headers=headers, timeout=10)
        wait_until(
            lambda: (
                Refund.objects.filter(payment__prescription_id=prescription_id, status="succeeded").exists()
                and Notification.objects.filter(prescription_id=prescription_id, kind="refunded").exists()
                and any(p["type"] == "prescription.cancelled" for p in receiver.accepted())
            ),
            seconds=60,
            what="cancelled at the gateway, refunded, notified",
        )
        time.sleep(1)  # let any duplicate work show itself
        gateway_stats, stripe_stats = simulator.stats(), stripe.stats()
    finally:
        stop_process(worker)
        simulator.stop()
        stripe.stop()

    assert first.status_code == 202
    # The repeat may land before or after the gateway confirmed: accepted, or already cancelled.
    assert (again.status_code, again.json()["status"]) in {(202, "acknowledged"), (200, "cancelled")}
    prescription = Prescription.objects.get(pk=prescription_id)
    assert (prescription.status, prescription.status_reason) == (Status.CANCELLED, "Dose changed")
    assert gateway_stats["orders"] == 1
    assert gateway_stats["cancellations"] == 1
    assert GatewayCancellation.objects.get().status == GatewayCancellation.Status.CANCELLED
    assert Refund.objects.filter(payment__prescription_id=prescription_id).count() == 1
    assert stripe_stats["refunds"] == 1
    assert sorted(
        Notification.objects.filter(prescription_id=prescription_id).values_list("kind", "channel", "status")
    ) == [
        ("cancelled", "email", "sent"),
        ("dispatched", "email", "sent"),
        ("refunded", "email", "sent"),
    ]
    cancelled = next(p for p in receiver.accepted() if p["type"] == "prescription.cancelled")
    assert cancelled["prescription"]["reason"] == "Dose changed"


def test_a_pharmacy_rejection_ends_rejected_by_pharmacy_refunded_once_and_the_clinic_hears_the_reason(
    live_server, settings, receiver
):  # type: ignore[no-untyped-def]
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    simulator, stripe, worker = pipeline(live_server, step_delay=0.2)
    try:
        simulator.control(reject_next=1)
        clinic = ClinicFactory()
        ClinicWebhookEndpoint.objects.create(clinic=clinic, url=receiver.url, secret=SECRET)
        prescription_id, _ = submit(live_server, clinic, email="pat@example.test")
        wait_until(
            lambda: (
                Refund.objects.filter(payment__prescription_id=prescription_id, status="succeeded").exists()
                and any(p["type"] == "prescription.rejected_by_pharmacy" for p in receiver.accepted())
            ),
            seconds=60,
            what="rejected by the pharmacy, refunded and reported",
        )
        time.sleep(1)
        gateway_stats, stripe_stats = simulator.stats(), stripe.stats()
    finally:
        stop_process(worker)
        simulator.stop()
        stripe.stop()

    prescription = Prescription.objects.get(pk=prescription_id)
    reason = "Pharmacy cannot fulfil this order: item out of stock."
    assert (prescription.status, prescription.status_reason) == (Status.REJECTED_BY_PHARMACY, reason)
    assert (gateway_stats["orders"], gateway_stats["rejections"]) == (1, 1)
    assert stripe_stats["refunds"] == 1
    rejected = next(p for p in receiver.accepted() if p["type"] == "prescription.rejected_by_pharmacy")
    assert (rejected["prescription"]["status"], rejected["prescription"]["reason"]) == (
        "rejected_by_pharmacy",
        reason,
    )
    assert (
        Notification.objects.filter(prescription_id=prescription_id, kind="rejected_by_pharmacy").count() == 1
    )
