"""The broker loses every message (FLUSHDB of its Redis database, or every RabbitMQ queue purged)
while gateway cancellations, refunds, clinic webhook deliveries and notifications are pending:
with beat and a worker started for real, each completes, exactly once, counted at the partners
and the clinic's receiver.

What brings them back: the owed tasks (events.OutboxTask) are published again when their lease
ends; the events whose consumer messages were lost are re-sent by the reconciler."""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest

from billing.adapters import stripe as stripe_api
from billing.models import Payment, Refund
from billing.services import payments
from events.models import ClinicWebhookEndpoint, Event, OutboxTask, WebhookDelivery
from events.services import outbox_relay_all, outbox_task_done
from notifications import services as notifications
from notifications.models import Notification
from pharmacy import services as pharmacy
from pharmacy.models import GatewayCancellation
from prescriptions.models import Prescription, Status
from saga import cancellation
from tests.billing.factories import approved_prescription, deliver, events_by_type
from tests.events.receiver import receiver_start
from tests.processes import broker_flush, wait_until

pytestmark = pytest.mark.faults

# Short enough for a test; the defaults are 45 s (lease) and 300 s / 60 s (reconciler).
FAST = {
    "OUTBOX_TASK_LEASE_SECONDS": "4",
    "RECONCILE_STALE_SECONDS": "4",
    "CLINIC_WEBHOOK_BACKOFF_SECONDS": "1",
    "CLINIC_WEBHOOK_BACKOFF_MAX_SECONDS": "2",
}


def _paid(stripe_sim, clinic, medication) -> Payment:  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic, medication)
    payments.payment_start(prescription_id=prescription.pk)
    payment = Payment.objects.get(prescription=prescription)
    stripe_api.payment_intent_confirm(
        intent_id=payment.stripe_payment_intent_id,
        payment_method="pm_card_visa",
        idempotency_key=f"pay-{payment.pk}",
    )
    deliver(events_by_type(stripe_sim, payment.stripe_payment_intent_id)["payment_intent.succeeded"])
    assert Prescription.objects.get(pk=prescription.pk).status == Status.PAID
    return payment


def _acknowledged_then_cancelled(stripe_sim, clinic, medication) -> int:  # type: ignore[no-untyped-def]
    """Paid, sent and acknowledged, then cancelled: the cancellation is pending at the gateway."""
    payment = _paid(stripe_sim, clinic, medication)
    dispatch = pharmacy.dispatch_create(prescription_id=payment.prescription_id)
    assert pharmacy.dispatch_send(dispatch_id=dispatch.pk) == "acknowledged"
    outbox_task_done(task=pharmacy.DISPATCH_SEND_TASK, args=[dispatch.pk])
    cancellation.prescription_cancel_request(
        clinic=clinic.clinic, prescription_id=payment.prescription_id, reason="Dose changed", actor="test"
    )
    return payment.prescription_id


def _paid_then_cancelled(stripe_sim, clinic, medication) -> int:  # type: ignore[no-untyped-def]
    """Paid, then cancelled before dispatch: the refund is pending (its consumer's message)."""
    payment = _paid(stripe_sim, clinic, medication)
    prescription = cancellation.prescription_cancel_request(
        clinic=clinic.clinic, prescription_id=payment.prescription_id, reason="Not needed", actor="test"
    )
    assert prescription.status == Status.CANCELLED
    return payment.prescription_id


def test_a_flushed_broker_loses_no_refund_cancellation_delivery_or_notification_and_repeats_none(
    clinic_a, paracetamol_loaded, gateway, stripe_sim, workers, beat, settings
):
    settings.GATEWAY_URL = gateway.url
    settings.OUTBOX_TASK_LEASE_SECONDS = int(FAST["OUTBOX_TASK_LEASE_SECONDS"])
    receiver = receiver_start()
    ClinicWebhookEndpoint.objects.create(clinic=clinic_a.clinic, url=receiver.url, secret="clinic-secret")
    try:
        # Given pending work of every kind, all of it published to the broker
        at_gateway = [
            _acknowledged_then_cancelled(stripe_sim, clinic_a, paracetamol_loaded) for _ in range(2)
        ]
        refunding = [_paid_then_cancelled(stripe_sim, clinic_a, paracetamol_loaded) for _ in range(2)]
        ids = at_gateway + refunding
        for prescription in Prescription.objects.filter(pk__in=ids).select_related("patient"):
            prescription.patient.email = f"patient-{prescription.pk}@example.org"
            prescription.patient.save(update_fields=["email"])
        cancelled = Event.objects.get(aggregate_id=refunding[0], type="prescription.cancelled")
        (original,) = notifications.notification_send_for_event(event_id=cancelled.pk)
        resend = notifications.notification_resend(notification_id=original.pk, actor="support")
        assert OutboxTask.objects.filter(task=pharmacy.CANCELLATION_SEND_TASK).count() == 2
        assert outbox_relay_all() > 0

        # When the broker loses every message, then beat and a worker start
        broker_flush()
        workers(STRIPE_API_BASE=stripe_sim.url, **FAST)
        beat(RECONCILE_BEAT_SECONDS="2")

        def progress() -> dict[str, int]:
            return {
                "cancelled": Prescription.objects.filter(pk__in=ids, status=Status.CANCELLED).count(),
                "refunds succeeded": Refund.objects.filter(status=Refund.Status.SUCCEEDED).count(),
                "resend sent": Notification.objects.filter(
                    pk=resend.pk, status=Notification.Status.SENT
                ).count(),
                "refunded notifications sent": Notification.objects.filter(
                    kind="refunded", status=Notification.Status.SENT
                ).count(),
                "deliveries not delivered": WebhookDelivery.objects.exclude(
                    status=WebhookDelivery.Status.DELIVERED
                ).count(),
                "cancelled deliveries": WebhookDelivery.objects.filter(
                    event__type="prescription.cancelled"
                ).count(),
                "tasks owed": OutboxTask.objects.count(),
            }

        done = {
            "cancelled": 4,
            "refunds succeeded": 4,
            "resend sent": 1,
            "refunded notifications sent": 4,
            "deliveries not delivered": 0,
            "cancelled deliveries": 4,
            "tasks owed": 0,
        }
        with contextlib.suppress(AssertionError):
            wait_until(lambda: progress() == done, seconds=150, what="every pending piece of work done")
        assert progress() == done

        # Then each was done exactly once
        assert gateway.stats()["cancellations"] == 2
        assert GatewayCancellation.objects.filter(status=GatewayCancellation.Status.CANCELLED).count() == 2
        refunds_by_intent = stripe_sim.stats()["refunds_by_intent"]
        assert len(refunds_by_intent) == 4
        assert all(len(refunds) == 1 for refunds in refunds_by_intent.values())
        assert Event.objects.filter(aggregate_id__in=ids, type="prescription.refunded").count() == 4
        posted = Counter(body["id"] for body in receiver.accepted())
        assert max(posted.values()) == 1
        assert set(posted) == {
            f"evt_{pk}" for pk in WebhookDelivery.objects.values_list("event_id", flat=True)
        }
        assert Notification.objects.filter(resend_of=original).count() == 1
        kinds = Counter(Notification.objects.filter(resend_of__isnull=True).values_list("kind", flat=True))
        assert kinds == {"dispatched": 2, "cancelled": 4, "refunded": 4}
    finally:
        receiver.stop()
