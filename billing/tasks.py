from celery import shared_task

from billing import services
from billing.payments import PaymentUnavailable
from billing.services import payments
from events.services import consume_once

# Transient Stripe failures are retried with backoff; each service counts its attempts in the
# database and gives up (into a status the admin shows) at STRIPE_MAX_ATTEMPTS.
RETRY = {
    "autoretry_for": (PaymentUnavailable,),
    "retry_backoff": 2,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "max_retries": 12,
    "time_limit": 60,
    "soft_time_limit": 45,
}


@shared_task(**RETRY)
def billing_on_approved(event_id: int) -> None:
    """Consumer of prescription.approved / pharmacist_approved: take payment or record NHS funding."""
    # Stripe is called here, so the record follows the effect (see consume_once).
    consume_once(
        consumer="billing.tasks.billing_on_approved",
        event_id=event_id,
        handle=lambda event: services.prescription_bill(prescription_id=event.aggregate_id),
        atomic=False,
    )


@shared_task(**RETRY)
def payment_compensate(event_id: int) -> None:
    """Consumer of prescription.cancelled: refund or cancel the payment, if there is one."""
    consume_once(
        consumer="billing.tasks.payment_compensate",
        event_id=event_id,
        handle=lambda event: payments.payment_compensate(prescription_id=event.aggregate_id),
        atomic=False,
    )


@shared_task(**RETRY)
def refund_send(refund_id: int) -> None:
    payments.refund_send(refund_id=refund_id)


@shared_task(time_limit=30)
def cancellation_request_on_refused(event_id: int) -> None:
    """Consumer of prescription.cancellation_refused: open the staff-queue entry."""
    consume_once(
        consumer="billing.tasks.cancellation_request_on_refused",
        event_id=event_id,
        handle=lambda event: payments.cancellation_request_on_refused(
            prescription_id=event.aggregate_id,
            reason=event.payload.get("reason", ""),
            actor=event.payload.get("requested_by", ""),
        ),
    )
