"""Saga consumers killed with their worker (SIGKILL: no exception, no acknowledgement, the
broker holds their messages until its visibility timeout) resume within a minute under the
default settings: the beat relay publishes each event again to the consumers that have not
processed it once its lease (45 s) has run out. Consumers are idempotent, so nothing is done
twice: one Stripe PaymentIntent and one gateway order per prescription, one notification per
event and channel.

The recovery time is written to var/log/faults/recovery.txt."""

from __future__ import annotations

import datetime
import signal
import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db.models import Count

from billing.models import Payment
from events.models import OutboxMessage, ProcessedEvent
from events.services import outbox_relay_all
from notifications.models import Notification
from pharmacy.models import DeadLetter, OrderAlert
from prescriptions import services
from prescriptions.models import Medication, Prescription, Status
from saga import journey
from tests.faults.conftest import LOG_DIR
from tests.faults.pipeline import assert_one_order_per_prescription
from tests.patients.factories import PatientFactory, distinct_nhs_number
from tests.processes import (
    Simulator,
    StripeSimulator,
    purge_queues,
    start_simulator,
    start_stripe_simulator,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.faults

COUNT = 8
PAST_BILLING = [Status.PAID, Status.ACKNOWLEDGED, Status.DISPENSED, Status.SHIPPED, Status.DELIVERED]


@pytest.fixture
def gateway(live_server) -> Iterator[Simulator]:  # type: ignore[no-untyped-def]
    """The gateway simulator walking orders on by webhooks to this test's server."""
    purge_queues()
    simulator = start_simulator(webhook_url=f"{live_server.url}/webhooks/gateway/", step_delay=0.5)
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def stripe(live_server) -> Iterator[StripeSimulator]:  # type: ignore[no-untyped-def]
    """Stripe paying each new PaymentIntent by itself, answering each call after 4 s: the
    billing consumer is in flight for that long."""
    simulator = start_stripe_simulator(
        webhook_url=f"{live_server.url}/webhooks/stripe/",
        auto_confirm=True,
        auto_confirm_delay=0.2,
        latency=4,
    )
    try:
        yield simulator
    finally:
        simulator.stop()


def received_private_prescriptions(setup, medication: Medication, count: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Private (card-paid) prescriptions just received, their events not yet published."""
    return [
        services.prescription_create(
            clinic=setup.clinic,
            patient=PatientFactory(
                clinic=setup.clinic, nhs_number=distinct_nhs_number(), email="patient@example.invalid"
            ),
            prescriber=setup.prescriber,
            issued_on=datetime.date(2026, 11, 20),
            items=[
                {
                    "medication": medication,
                    "dose_text": "One tablet twice a day",
                    "quantity": 28,
                    "unit": "tablet",
                    "days_supply": 14,
                }
            ],
        ).pk
        for _ in range(count)
    ]


def count_in(ids: list[int], statuses: list[str]) -> int:
    return Prescription.objects.filter(pk__in=ids, status__in=statuses).count()


def test_consumers_killed_with_their_worker_resume_within_a_minute_and_do_nothing_twice(
    clinic_a, paracetamol_loaded, gateway, stripe, workers, beat
):
    # Given the journey running (default lease, relay every 2 s, reconciler at 300 s), and the
    # worker SIGKILLed while billing consumers wait on Stripe; the calls they had made are lost
    # too (Stripe refuses them when its delay ends), so only a new delivery of the `approved`
    # event can bill those prescriptions
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    assert settings.OUTBOX_TASK_LEASE_SECONDS == 45
    assert settings.RECONCILE_STALE_SECONDS == 300
    ids = received_private_prescriptions(clinic_a, paracetamol_loaded, COUNT)
    first = workers(STRIPE_API_BASE=stripe.url)
    beat()
    outbox_relay_all()
    wait_until(
        lambda: Payment.objects.filter(prescription_id__in=ids).count() >= 2,
        seconds=90,
        what="billing consumers calling Stripe",
    )
    stop_process(first, sig=signal.SIGKILL)
    killed_at = time.monotonic()
    stripe.control(down=True)
    time.sleep(5)  # the killed calls' delay (4 s) ends: Stripe refuses them, no intent
    stripe.control(down=False, latency=0)
    stranded = list(
        Payment.objects.filter(prescription_id__in=ids, stripe_payment_intent_id="").values_list(
            "prescription_id", flat=True
        )
    )
    assert stranded, "no billing consumer was killed mid-call"
    assert not ProcessedEvent.objects.filter(
        consumer=journey.BILL, event__aggregate_id__in=stranded, event__type="prescription.approved"
    ).exists()

    # When a new worker starts
    workers(STRIPE_API_BASE=stripe.url)
    wait_until(lambda: count_in(ids, PAST_BILLING) == COUNT, seconds=120, what="every prescription paid")
    recovery = time.monotonic() - killed_at
    wait_until(lambda: count_in(ids, [Status.DELIVERED]) == COUNT, seconds=180, what="every one delivered")
    delivered = time.monotonic() - killed_at

    # Then the stranded ones were billed by the relay's republication, and every prescription
    # is delivered with one order and one charge each, and each notification went once
    republished = OutboxMessage.objects.filter(
        event__aggregate_id__in=stranded, event__type="prescription.approved", attempts__gte=2
    )
    # RabbitMQ hands a dead consumer's unacknowledged message to the next one at once; Redis
    # keeps it until its visibility timeout, so there the relay's lease is what resumes it.
    if settings.CELERY_BROKER_IS_AMQP:
        assert republished.count() <= len(stranded)
    else:
        assert republished.count() == len(stranded)
    assert_one_order_per_prescription(gateway, ids)
    stats = stripe.stats()
    assert stats["payment_intents"] == COUNT
    assert len(stats["intents_by_key"]) == COUNT
    payments = Payment.objects.filter(prescription_id__in=ids)
    assert payments.count() == COUNT
    assert set(payments.values_list("status", flat=True)) == {Payment.Status.SUCCEEDED}
    originals = Notification.objects.filter(prescription_id__in=ids, resend_of__isnull=True)
    # The `delivered` notification follows the status change: wait for the last consumers
    wait_until(lambda: originals.count() >= 3 * COUNT, seconds=30, what="the notifications sent")
    notified = originals.values("prescription_id", "kind", "channel").annotate(count=Count("id"))
    assert {row["count"] for row in notified} == {1}
    assert {row["kind"] for row in notified} == {"dispatched", "shipped", "delivered"}
    assert len(notified) == 3 * COUNT
    assert not DeadLetter.objects.exists()
    assert not OrderAlert.objects.exists()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with (LOG_DIR / "recovery.txt").open("a") as report:
        report.write(
            f"consumers killed with their worker (default settings, {len(stranded)} stranded): all {COUNT} "
            f"paid {recovery:.1f}s, delivered {delivered:.1f}s after the kill\n"
        )
    assert recovery <= 60, f"all paid {recovery:.1f}s after the kill"
