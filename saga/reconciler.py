"""The reconciler: nothing accepted is lost even when the broker loses messages.

The outbox relay covers events never published, and sends a published event again to the
consumers that have not processed it one lease (OUTBOX_TASK_LEASE_SECONDS) later, up to
OUTBOX_EVENT_REPUBLISH_LIMIT times (a consumer killed with its worker resumes within a minute).
This is the slower net behind it: it covers events that were published but whose task never ran (a broker restarted without persistence, a purged queue): a prescription
that has sat in a state with consumers for longer than RECONCILE_STALE_SECONDS, whose
entering event some consumer has not processed, has that event sent to that consumer again.
Beyond those states, every published event that some consumer has not processed
RECONCILE_STALE_SECONDS later is sent to that consumer again (a lost notification or clinic
webhook after `acknowledged`). Consumers run through `consume_once`, so a resend that races a
slow original is a no-op. Tasks owed for other work (events.OutboxTask: sends to the gateway,
deliveries, refunds) need no reconciler: the relay publishes them again when their lease ends.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from events.models import Event, OutboxMessage, ProcessedEvent
from events.services import event_consumers_send, outbox_relay
from pharmacy import routing
from pharmacy.services import dispatches_requeue_stale
from prescriptions.models import Prescription, Status

logger = logging.getLogger(__name__)

# States a consumer moves a prescription out of (or, for paid/nhs_funded, creates a dispatch).
WAITING_ON_A_CONSUMER = (Status.RECEIVED, Status.APPROVED, Status.PAID, Status.NHS_FUNDED)


def stuck_prescriptions(*, older_than_seconds: int) -> QuerySet[Prescription]:
    """Prescriptions sitting in a state a consumer should have moved them out of (the
    reconciler acts on these; the operator dashboard counts them)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    today = timezone.localdate()
    # A prescription held until its start date is waiting on purpose, not stuck.
    # So is one whose dispatch waits in the staff queue for an eligible partner.
    return Prescription.objects.filter(status__in=WAITING_ON_A_CONSUMER, updated_at__lt=cutoff).exclude(
        Q(start_date__gt=today) | Q(earliest_fill_date__gt=today) | routing.waiting_filter()
    )


def stuck_events_republish(*, older_than_seconds: int, limit: int) -> list[tuple[str, int]]:
    """Send each stuck prescription's entering event to the consumers that missed it."""
    stuck = dict(
        stuck_prescriptions(older_than_seconds=older_than_seconds)
        .order_by("id")
        .values_list("pk", "status")[:limit]
    )
    if not stuck:
        return []
    consumed_types = [event_type for event_type, names in settings.EVENT_CONSUMERS.items() if names]
    # The latest consumed event of each prescription (DISTINCT ON: one query for the batch).
    latest = (
        Event.objects.filter(aggregate_type="prescription", aggregate_id__in=stuck, type__in=consumed_types)
        .order_by("aggregate_id", "-sequence")
        .distinct("aggregate_id")
    )
    entering = [event for event in latest if event.payload.get("to") == stuck[event.aggregate_id]]
    processed = set(
        ProcessedEvent.objects.filter(event__in=[event.pk for event in entering]).values_list(
            "consumer", "event_id"
        )
    )
    sent = []
    for event in entering:
        for consumer in settings.EVENT_CONSUMERS[event.type]:
            if (consumer, event.pk) not in processed:
                sent.append((consumer, event.pk))
    event_consumers_send(sent)
    return sent


def unconsumed_events_republish(
    *, older_than_seconds: int, limit: int, already_sent: frozenset[tuple[str, int]] = frozenset()
) -> list[tuple[str, int]]:
    """Send each event published more than `older_than_seconds` ago to the consumers that have
    not processed it; an event every consumer has processed is marked settled and not looked
    at again. This covers every event, wherever its prescription is (a lost notification or
    clinic-webhook task after `acknowledged`), at a bounded cost per pass."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    unsettled = list(
        OutboxMessage.objects.filter(settled_at__isnull=True, published_at__lt=cutoff)
        .order_by("published_at")
        .values_list("pk", "event_id", "event__type")[:limit]
    )
    processed = set(
        ProcessedEvent.objects.filter(event_id__in=[event_id for _, event_id, _ in unsettled]).values_list(
            "consumer", "event_id"
        )
    )
    settled: list[int] = []
    sent: list[tuple[str, int]] = []
    for message_id, event_id, event_type in unsettled:
        missing = [
            consumer
            for consumer in settings.EVENT_CONSUMERS.get(event_type, ())
            if (consumer, event_id) not in processed
        ]
        if not missing:
            settled.append(message_id)
        for consumer in missing:
            if (consumer, event_id) not in already_sent:
                sent.append((consumer, event_id))
    event_consumers_send(sent)
    OutboxMessage.objects.filter(pk__in=settled).update(settled_at=timezone.now())
    return sent


def stuck_work_reconcile() -> dict[str, int]:
    """One reconciler pass (a beat task); returns what it re-enqueued."""
    published = outbox_relay()
    republished = stuck_events_republish(
        older_than_seconds=settings.RECONCILE_STALE_SECONDS, limit=settings.RECONCILE_BATCH_SIZE
    )
    # What the pass above just re-sent is not sent twice.
    republished += unconsumed_events_republish(
        older_than_seconds=settings.RECONCILE_STALE_SECONDS,
        limit=settings.RECONCILE_BATCH_SIZE,
        already_sent=frozenset(republished),
    )
    dispatches = dispatches_requeue_stale(
        older_than_seconds=settings.RECONCILE_DISPATCH_STALE_SECONDS, limit=settings.RECONCILE_BATCH_SIZE
    )
    report = {"outbox": published, "events": len(republished), "dispatches": len(dispatches)}
    if republished or dispatches:
        logger.warning("reconciler re-enqueued stuck work: %s", report)
    return report
