from celery import shared_task

from accounts.idempotency import idempotency_keys_purge as purge


@shared_task(time_limit=300)
def idempotency_keys_purge() -> int:
    return purge()
