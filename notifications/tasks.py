from celery import shared_task

from notifications import services


@shared_task(time_limit=60, soft_time_limit=45)
def notification_on_event(event_id: int) -> None:
    """Consumer of the patient-facing prescription events (notifications.services.KINDS)."""
    services.notification_send_for_event(event_id=event_id)
