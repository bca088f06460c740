from celery import shared_task

from notifications import services


@shared_task(time_limit=60, soft_time_limit=45)
def notification_deliver(notification_id: int) -> None:
    """Send one staff-requested resend (claimed first: never twice)."""
    services.notification_deliver(notification_id=notification_id)
