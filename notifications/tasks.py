from celery import shared_task

from events.services import outbox_task_run
from notifications import services


@shared_task(name=services.DELIVER_TASK, time_limit=40, soft_time_limit=30)
def notification_deliver(notification_id: int) -> None:
    """Send one staff-requested resend. Its claim (queued → sending) has a lease: a run killed
    with its worker leaves the row owed, the relay publishes it again when the lease ends, and
    that run takes the stale claim over. A failure to send is recorded on the notification for
    staff, not retried."""
    outbox_task_run(
        task=services.DELIVER_TASK,
        args=[notification_id],
        run=lambda: services.notification_deliver(notification_id=notification_id),
        retry_on=(),
        backoff=lambda retries: 0.0,
    )
