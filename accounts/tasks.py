from celery import shared_task

from accounts import services


@shared_task(time_limit=300, soft_time_limit=240)
def idempotency_keys_purge() -> int:
    return services.idempotency_keys_purge()
