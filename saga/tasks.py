"""The journey's consumers (saga/journey.py), each a thin adapter: `consume_once` around one
app's service. Their names are stable identifiers (see saga/journey.py), given explicitly.

Each consumer's hard time limit stays below OUTBOX_TASK_LEASE_SECONDS: the relay publishes an
event again to a consumer that has not processed it one lease after publication
(tests/events/test_outbox.py), and a healthy run must be over by then."""

from __future__ import annotations

from collections.abc import Callable

from celery import shared_task

from billing import services as billing
from billing.payments import PaymentUnavailable
from billing.services import payments
from billing.tasks import stripe_backoff_seconds
from events import webhooks
from events.models import Event
from events.services import (
    consume_once,
    event_consumers_run,
    event_consumers_run_here,
    outbox_task_run,
    outbox_tasks_run,
    outbox_tasks_run_here,
    outbox_tasks_still_owed,
)
from notifications import services as notifications
from pharmacy import services as pharmacy
from prescriptions import repeats
from prescriptions import services as prescriptions
from saga import holds, journey, reconciler


def consume_calling_stripe(*, consumer: str, event_id: int, handle: Callable[[Event], object]) -> None:
    """A consumer whose effect calls Stripe (so the record follows the effect, see consume_once).
    Stripe being unavailable owes the consumer again as an outbox row with a due time, published
    by the relay, never a countdown message the broker could lose; each service counts its own
    attempts and gives up into a status staff see."""
    outbox_task_run(
        task=consumer,
        args=[event_id],
        run=lambda: consume_once(consumer=consumer, event_id=event_id, handle=handle, atomic=False),
        retry_on=(PaymentUnavailable,),
        backoff=stripe_backoff_seconds,
    )


@shared_task(name=journey.CHECK, time_limit=40, soft_time_limit=30)
def prescription_check(event_id: int) -> None:
    """prescription.received: run the clinical checks.

    Checks that approve the prescription outright lead straight to billing: that consumer of the
    approval (saga.journey.RUN_HERE) runs in this task after the commit, instead of as a second
    task through the broker. It shares this task's time limits, whose hard limit stays below the
    lease: a run cut short leaves the approval's billing to the lease pass."""
    with event_consumers_run_here(journey.RUN_HERE[journey.CHECK]) as here:
        consume_once(
            consumer=journey.CHECK,
            event_id=event_id,
            handle=lambda event: prescriptions.prescription_run_checks(prescription_id=event.aggregate_id),
        )
    event_consumers_run(here)


@shared_task(name=journey.REPEATS, time_limit=40, soft_time_limit=30)
def repeat_series_start(event_id: int) -> None:
    """Approval: start the repeat series, if the prescription has repeats."""
    consume_once(
        consumer=journey.REPEATS,
        event_id=event_id,
        handle=lambda event: repeats.repeat_series_start(prescription_id=event.aggregate_id),
    )


@shared_task(name=journey.BILL, time_limit=40, soft_time_limit=30)
def billing_on_approved(event_id: int) -> None:
    """Approval: take payment or record NHS funding."""
    consume_calling_stripe(
        consumer=journey.BILL,
        event_id=event_id,
        handle=lambda event: billing.prescription_bill(prescription_id=event.aggregate_id),
    )


@shared_task(name=journey.DISPATCH, time_limit=40, soft_time_limit=30)
def dispatch_on_approved(event_id: int) -> None:
    """prescription.paid / nhs_funded (billing done): create the dispatch, then send it here.

    The send is owed as an outbox row in the dispatch's transaction, as everywhere, but runs in
    this task straight after the commit instead of as a second task: it shares this queue and
    time limits, and a worker that dies first leaves the row to the relay (outbox_tasks_run_here)."""
    with outbox_tasks_run_here() as owed:
        ran = consume_once(
            consumer=journey.DISPATCH,
            event_id=event_id,
            handle=lambda event: holds.dispatch_unless_held(prescription_id=event.aggregate_id),
        )
    if not ran:
        # A second delivery (the first run's worker died, or it is still sending): the send the
        # first run owed, if still owed, runs again here, as a redelivered send task would; the
        # partner's idempotency key keeps it to one order.
        owed = outbox_tasks_still_owed(pharmacy.dispatch_sends_for_event(event_id=event_id))
    outbox_tasks_run(owed)


@shared_task(name="pharmacy.tasks.held_prescriptions_release", time_limit=120, soft_time_limit=90)
def held_prescriptions_release() -> int:
    """Beat: send the held prescriptions whose start date has come to the pharmacy."""
    return len(holds.held_prescriptions_release())


@shared_task(name=journey.COMPENSATE, time_limit=40, soft_time_limit=30)
def payment_compensate(event_id: int) -> None:
    """prescription.cancelled / rejected_by_pharmacy: refund or cancel the payment, if any."""
    consume_calling_stripe(
        consumer=journey.COMPENSATE,
        event_id=event_id,
        handle=lambda event: payments.payment_compensate(prescription_id=event.aggregate_id),
    )


@shared_task(name=journey.STAFF_QUEUE, time_limit=30, soft_time_limit=20)
def cancellation_request_on_refused(event_id: int) -> None:
    """prescription.cancellation_refused: open the staff-queue entry."""
    consume_once(
        consumer=journey.STAFF_QUEUE,
        event_id=event_id,
        handle=lambda event: payments.cancellation_request_on_refused(
            prescription_id=event.aggregate_id,
            # The clinic's words live encrypted on the cancellation, never in the event.
            reason=pharmacy.gateway_cancellation_reason(cancellation_id=event.payload.get("cancellation_id")),
            actor=event.payload.get("requested_by", ""),
        ),
    )


@shared_task(name=journey.NOTIFY, time_limit=40, soft_time_limit=30)
def notification_on_event(event_id: int) -> None:
    """The patient-facing events (notifications.services.KINDS): email and/or SMS."""
    # Sending is network I/O, so the record follows the effect; the Notification row, unique per
    # (event, channel), already keeps a repeat from sending twice.
    consume_once(
        consumer=journey.NOTIFY,
        event_id=event_id,
        handle=lambda event: notifications.notification_send_for_event(event_id=event.pk, event=event),
        atomic=False,
    )


@shared_task(name=journey.CLINIC_WEBHOOK, time_limit=30, soft_time_limit=20)
def webhook_on_prescription_event(event_id: int) -> None:
    """Every prescription status event: queue the clinic's signed webhook."""
    consume_once(
        consumer=journey.CLINIC_WEBHOOK,
        event_id=event_id,
        handle=lambda event: webhooks.webhook_deliveries_create(event_id=event.pk),
    )


@shared_task(name="events.tasks.stuck_work_reconcile", time_limit=120, soft_time_limit=90)
def stuck_work_reconcile() -> dict[str, int]:
    return reconciler.stuck_work_reconcile()
