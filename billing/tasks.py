from celery import shared_task

from billing.payments import PaymentUnavailable
from billing.services import payments
from events.services import backoff_with_jitter, outbox_task_run


def stripe_backoff_seconds(retries: int) -> float:
    """Transient Stripe failures: 2 s doubling to 10 minutes, with jitter."""
    return backoff_with_jitter(retries=retries, base=2, ceiling=600)


@shared_task(name=payments.REFUND_SEND_TASK, time_limit=40, soft_time_limit=30)
def refund_send(refund_id: int) -> None:
    # Owed as an OutboxTask row (billing.services.payments.refund_request); a retry is a due
    # time on that row. The service gives up at STRIPE_MAX_ATTEMPTS into a status staff see.
    outbox_task_run(
        task=payments.REFUND_SEND_TASK,
        args=[refund_id],
        run=lambda: payments.refund_send(refund_id=refund_id),
        retry_on=(PaymentUnavailable,),
        backoff=stripe_backoff_seconds,
    )
