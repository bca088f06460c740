from celery import shared_task

from events import services, webhooks


@shared_task(time_limit=60, soft_time_limit=45)
def outbox_relay() -> int:
    return services.outbox_relay_all()


@shared_task(name=webhooks.DELIVER_TASK, time_limit=30, soft_time_limit=20)
def webhook_deliver(delivery_id: int) -> None:
    # The 24-hour window is kept in the database (window_started_at); a retry waits as a due
    # time on the delivery's OutboxTask row, published again by the beat relay.
    services.outbox_task_run(
        task=webhooks.DELIVER_TASK,
        args=[delivery_id],
        run=lambda: webhooks.webhook_deliver(delivery_id=delivery_id),
        retry_on=(webhooks.WebhookRetry,),
        backoff=webhooks.backoff_seconds,
    )
