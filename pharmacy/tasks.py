from typing import Any

from celery import shared_task
from django.conf import settings

from events.services import backoff_with_jitter, outbox_task_run
from pharmacy import services, stock
from pharmacy.gateway import GatewayUnavailable

# Each send's hard time limit stays below OUTBOX_TASK_LEASE_SECONDS (tests/events/test_outbox_tasks.py),
# so a healthy send is never published a second time while it runs.
SEND_LIMITS: dict[str, Any] = {"time_limit": 40, "soft_time_limit": 30}


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with jitter, capped at GATEWAY_RETRY_BACKOFF_MAX_SECONDS."""
    return backoff_with_jitter(
        retries=retries,
        base=settings.GATEWAY_RETRY_BACKOFF_SECONDS,
        ceiling=settings.GATEWAY_RETRY_BACKOFF_MAX_SECONDS,
    )


@shared_task(name=services.DISPATCH_SEND_TASK, **SEND_LIMITS)
def dispatch_send(dispatch_id: int) -> None:
    # Owed as an OutboxTask row: a retry is a due time on that row (the service counts attempts
    # and keeps the retry window in the database), published again by the beat relay.
    outbox_task_run(
        task=services.DISPATCH_SEND_TASK,
        args=[dispatch_id],
        run=lambda: services.dispatch_send(dispatch_id=dispatch_id),
        retry_on=(GatewayUnavailable,),
        backoff=backoff_seconds,
    )


@shared_task(name=services.CANCELLATION_SEND_TASK, **SEND_LIMITS)
def gateway_cancellation_send(cancellation_id: int) -> None:
    outbox_task_run(
        task=services.CANCELLATION_SEND_TASK,
        args=[cancellation_id],
        run=lambda: services.gateway_cancellation_send(cancellation_id=cancellation_id),
        retry_on=(GatewayUnavailable,),
        backoff=backoff_seconds,
    )


@shared_task(time_limit=120, soft_time_limit=100)
def orders_poll_stale() -> dict[str, int]:
    """Beat: ask the gateway about orders that went quiet; raise the hopeless ones to operators."""
    return services.orders_poll_stale()


@shared_task(time_limit=120, soft_time_limit=100)
def partner_orders_poll() -> dict[str, int]:
    """Beat: ask partners that report status only when asked where their orders are."""
    return services.partner_orders_poll()


@shared_task(time_limit=300, soft_time_limit=240)
def partner_stock_pull_all() -> dict[str, int]:
    """Beat: pull every partner's stock CSV."""
    return stock.partner_stock_pull_all()


@shared_task(name=services.ROUTE_WAITING_TASK, time_limit=120, soft_time_limit=100)
def dispatches_route_waiting() -> None:
    """Owed after a stock feed or partner change: route the dispatches waiting for a partner."""
    outbox_task_run(
        task=services.ROUTE_WAITING_TASK,
        args=[],
        run=services.dispatches_route_waiting,
        retry_on=(),
        backoff=backoff_seconds,
    )
