from celery import shared_task

from billing.payments import PaymentUnavailable
from billing.services import payments

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
def refund_send(refund_id: int) -> None:
    payments.refund_send(refund_id=refund_id)
