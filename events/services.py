"""Writing events and relaying them to their consumers (the transactional outbox)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from config.celery import app
from events.models import Event, OutboxMessage, ProcessedEvent

logger = logging.getLogger(__name__)


def event_record(
    *,
    aggregate_type: str,
    aggregate_id: int,
    type: str,
    clinic_id: int | None = None,
    payload: dict[str, Any] | None = None,
    actor: str = "",
) -> Event:
    """Append an event (and its outbox row) inside the caller's transaction.

    The caller must hold a row lock on the aggregate (a conditional UPDATE or
    select_for_update), which is what keeps `sequence` gap-free and ordered; the unique
    constraint turns any mistake there into an error rather than a silent interleaving.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("event_record must run inside the state change's transaction")
    last = Event.objects.filter(aggregate_type=aggregate_type, aggregate_id=aggregate_id).aggregate(
        last=Max("sequence")
    )["last"]
    event = Event.objects.create(
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        sequence=(last or 0) + 1,
        clinic_id=clinic_id,
        type=type,
        payload=payload or {},
        actor=actor,
    )
    if settings.EVENT_CONSUMERS.get(type):
        OutboxMessage.objects.create(event=event)
        if settings.OUTBOX_PUBLISH_ON_COMMIT:
            transaction.on_commit(_publish_after_commit)
    return event


def _publish_after_commit() -> None:
    try:
        outbox_relay()
    except BrokerError:
        # The broker is down: the rows stay unpublished and the beat relay retries them.
        logger.warning("outbox publish after commit failed; the relay will retry")


def outbox_relay(*, batch_size: int = 200) -> int:
    """Publish unpublished events to their consumers; returns how many were published.

    Rows are claimed with SKIP LOCKED, so two relays running at once never publish the same
    row in the same pass. Publishing happens before the rows are marked: if the process dies
    in between, the rows are published again, which consumers tolerate (they are
    idempotent) — at-least-once, never lost.
    """
    published = 0
    while True:
        with transaction.atomic():
            rows = list(
                OutboxMessage.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(published_at__isnull=True)
                .select_related("event")
                .order_by("id")[:batch_size]
            )
            if not rows:
                return published
            for row in rows:
                for task_name in settings.EVENT_CONSUMERS.get(row.event.type, ()):
                    app.send_task(task_name, args=[row.event_id])
            _outbox_mark_published(message_ids=[row.pk for row in rows])
            published += len(rows)
        if len(rows) < batch_size:
            return published


def _outbox_mark_published(*, message_ids: list[int]) -> None:
    OutboxMessage.objects.filter(pk__in=message_ids).update(
        published_at=timezone.now(), attempts=F("attempts") + 1
    )


def events_for(*, aggregate_type: str, aggregate_id: int) -> list[Event]:
    return list(
        Event.objects.filter(aggregate_type=aggregate_type, aggregate_id=aggregate_id).order_by("sequence")
    )


def consume_once(
    *,
    consumer: str,
    event_id: int,
    handle: Callable[[Event], object],
    atomic: bool = True,
) -> bool:
    """Run `handle(event)` at most once per (consumer, event); True if it ran now.

    The relay publishes at least once, so the same event can reach a consumer twice (a
    republished outbox row, a redelivered task). With `atomic`, the ProcessedEvent row is
    inserted first in the same transaction as the effect: a concurrent duplicate waits on the
    unique index and then finds the record, so a database-only effect happens exactly once.
    An effect that calls the network (Stripe) cannot sit in a transaction (`atomic=False`):
    the record is written after it succeeds, and a crash in between re-runs an effect that is
    itself idempotent (guarded updates, a fixed idempotency key downstream).
    """
    event = Event.objects.filter(pk=event_id).first()
    if event is None:
        return False
    if not atomic:
        if ProcessedEvent.objects.filter(consumer=consumer, event_id=event_id).exists():
            return False
        handle(event)
        ProcessedEvent.objects.bulk_create(
            [ProcessedEvent(consumer=consumer, event_id=event_id)], ignore_conflicts=True
        )
        return True
    try:
        with transaction.atomic():
            ProcessedEvent.objects.create(consumer=consumer, event_id=event_id)
            handle(event)
    except IntegrityError:
        # Only the ProcessedEvent insert can collide here: the effect's own writes are
        # guarded updates, so an IntegrityError means another delivery got there first.
        if ProcessedEvent.objects.filter(consumer=consumer, event_id=event_id).exists():
            return False
        raise
    return True
