from celery import shared_task

from events import services


@shared_task(time_limit=60)
def outbox_relay() -> int:
    return services.outbox_relay()
