from celery import shared_task

from events.services import outbox_task_done
from notifications import services


@shared_task(name=services.DELIVER_TASK, time_limit=40, soft_time_limit=30)
def notification_deliver(notification_id: int) -> None:
    """Send one staff-requested resend (claimed first: never twice); nothing is retried, a
    failure is recorded on the notification for staff."""
    services.notification_deliver(notification_id=notification_id)
    outbox_task_done(task=services.DELIVER_TASK, args=[notification_id])
