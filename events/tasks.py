from celery import shared_task

from events import services, webhooks


@shared_task(time_limit=60, soft_time_limit=45)
def outbox_relay() -> int:
    return services.outbox_relay()


@shared_task(bind=True, max_retries=None, time_limit=60, soft_time_limit=45)
def webhook_deliver(self, delivery_id: int) -> None:  # type: ignore[no-untyped-def]
    try:
        webhooks.webhook_deliver(delivery_id=delivery_id)
    except webhooks.WebhookRetry as error:
        # The 24-hour window is kept in the database (created_at), so it also bounds a chain
        # restarted by redelivery.
        raise self.retry(exc=error, countdown=webhooks.backoff_seconds(self.request.retries)) from error
