import random

from celery import shared_task
from django.conf import settings

from pharmacy import services
from pharmacy.gateway import GatewayUnavailable


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with full jitter, capped (the cap stays well under the broker's
    visibility timeout, so a waiting retry is never redelivered as a duplicate)."""
    ceiling = min(
        settings.GATEWAY_RETRY_BACKOFF_MAX_SECONDS,
        settings.GATEWAY_RETRY_BACKOFF_SECONDS * (2**retries),
    )
    return random.uniform(ceiling / 2, ceiling)


@shared_task(bind=True, max_retries=None, time_limit=60, soft_time_limit=45)
def dispatch_send(self, dispatch_id: int) -> None:  # type: ignore[no-untyped-def]
    try:
        services.dispatch_send(dispatch_id=dispatch_id)
    except GatewayUnavailable as error:
        # The service counts attempts in the database and dead-letters at the limit, so a
        # retry chain restarted by redelivery or replay still stops at the same bound.
        raise self.retry(exc=error, countdown=backoff_seconds(self.request.retries)) from error


@shared_task(bind=True, max_retries=None, time_limit=60, soft_time_limit=45)
def gateway_cancellation_send(self, cancellation_id: int) -> None:  # type: ignore[no-untyped-def]
    try:
        services.gateway_cancellation_send(cancellation_id=cancellation_id)
    except GatewayUnavailable as error:
        # Attempts are counted in the database; the service gives up at GATEWAY_MAX_ATTEMPTS.
        raise self.retry(exc=error, countdown=backoff_seconds(self.request.retries)) from error
