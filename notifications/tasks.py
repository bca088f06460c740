from celery import shared_task

from events.services import consume_once
from notifications import services


@shared_task(time_limit=60, soft_time_limit=45)
def notification_on_event(event_id: int) -> None:
    """Consumer of the patient-facing prescription events (notifications.services.KINDS)."""
    # Sending is network I/O, so the record follows the effect; the Notification row, unique per
    # (event, channel), already keeps a repeat from sending twice.
    consume_once(
        consumer="notifications.tasks.notification_on_event",
        event_id=event_id,
        handle=lambda event: services.notification_send_for_event(event_id=event.pk),
        atomic=False,
    )


@shared_task(time_limit=60, soft_time_limit=45)
def notification_deliver(notification_id: int) -> None:
    """Send one staff-requested resend (claimed first: never twice)."""
    services.notification_deliver(notification_id=notification_id)
