"""Writing events and relaying them to their consumers (the transactional outbox)."""

from __future__ import annotations

import functools
import json
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from common.rows import column_count, columns_sql, instance_from_columns, mark_saved, planned_cursor
from config.celery import app
from events.archive import archived_events_for, archived_events_of
from events.models import Event, OutboxMessage, OutboxTask, ProcessedEvent

logger = logging.getLogger(__name__)


# One round trip for the event, its sequence number and its outbox row: every state change
# of the journey writes one, so this is on the hot path of intake and of every task. The CTEs
# are EventDraft.sql; a caller may write them in a statement of its own (EventDraft).
_EVENT_CTES = """
new_event AS (
    INSERT INTO events_event
        (aggregate_type, aggregate_id, sequence, clinic_id, type, payload, actor, created_at)
    SELECT %s::text, %s::bigint,
           -- Past the log's last event, else (read only then) where events_archive stopped.
           COALESCE(MAX(sequence), (SELECT j.last_sequence FROM events_event_archive_journey j
                                     WHERE j.aggregate_type = %s::text AND j.aggregate_id = %s::bigint), 0) + 1,
           %s::bigint, %s::text, %s::jsonb, %s::text, %s::timestamptz
    FROM events_event
    WHERE aggregate_type = %s::text AND aggregate_id = %s::bigint
    RETURNING id, sequence, aggregate_id, clinic_id
), new_outbox AS (
    -- Published by this statement when the commit publishes it (_AfterCommitPublish).
    INSERT INTO events_outboxmessage (event_id, attempts, published_at, created_at)
    SELECT id, CASE WHEN %s::boolean THEN 1 ELSE 0 END, CASE WHEN %s::boolean THEN %s::timestamptz END,
           %s::timestamptz
    FROM new_event WHERE %s::boolean
)"""


@functools.cache
def _idle_cte(conditions: tuple[str, ...]) -> str:
    """The CTE recording, as handled, each consumer of the new event with nothing to do
    (`conditions`: settings.EVENT_CONSUMER_IDLE_WHEN's, one per consumer named by a parameter),
    as _nothing_to_do_drop does at publication; it returns those consumers."""
    idle = " UNION ALL ".join(
        f"SELECT %s::text AS consumer, event.id AS event_id FROM new_event AS event WHERE {condition}"
        for condition in conditions
    )
    return f"""
, new_idle AS (
    INSERT INTO events_processedevent (consumer, event_id, processed_at)
    SELECT idle.consumer, idle.event_id, now() FROM ({idle}) AS idle
    ON CONFLICT DO NOTHING
    RETURNING consumer
)"""  # noqa: S608 - the conditions are the project's own constants, the values are parameters


class EventDraft:
    """An event to append inside the caller's transaction, for a caller that writes it in a
    statement of its own: `sql` is CTEs (`new_event` among them) taking `params`, `returning`
    the select list to read from `new_event`, and `recorded(*those columns)` completes the event
    once that statement ran. event_record() is the usual way; the rules are its.

    On the system connection, with OUTBOX_PUBLISH_ON_COMMIT, the statement also marks the outbox
    row published and records the consumers with nothing to do as handled: the publish after
    commit is then the broker send alone, with no statement of its own. The API role may not
    record consumers' work, so its events take the publish's own statement."""

    def __init__(
        self,
        *,
        aggregate_type: str,
        aggregate_id: int,
        type: str,
        clinic_id: int | None,
        payload: dict[str, Any] | None,
        actor: str,
    ) -> None:
        self.connection = transaction.get_connection()
        if not self.connection.in_atomic_block:
            raise RuntimeError("an event must be written inside the state change's transaction")
        consumers = settings.EVENT_CONSUMERS.get(type, ())
        self.consumed = bool(consumers)
        self.published = (
            self.consumed and settings.OUTBOX_PUBLISH_ON_COMMIT and self.connection.alias == DEFAULT_DB_ALIAS
        )
        self.event = Event(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            clinic_id=clinic_id,
            type=type,
            payload=payload or {},
            actor=actor,
            created_at=timezone.now(),
        )
        event = self.event
        payload_prepared = Event._meta.get_field("payload").get_db_prep_save(event.payload, self.connection)
        self.params: list[Any] = [
            *(aggregate_type, aggregate_id, aggregate_type, aggregate_id),
            *(clinic_id, type, payload_prepared, actor, event.created_at),
            *(aggregate_type, aggregate_id),
            *(self.published, self.published, event.created_at, event.created_at, self.consumed),
        ]
        conditions = settings.EVENT_CONSUMER_IDLE_WHEN
        idle = [consumer for consumer in consumers if consumer in conditions] if self.published else []
        if idle:
            self.sql = _EVENT_CTES + _idle_cte(tuple(conditions[consumer] for consumer in idle))
            self.params += idle
            self.returning = "new_event.id, new_event.sequence, ARRAY(SELECT consumer FROM new_idle)"
        else:
            self.sql = _EVENT_CTES
            self.returning = "new_event.id, new_event.sequence, ARRAY[]::text[]"

    def recorded(self, pk: int, sequence: int, idle: Sequence[str] = ()) -> Event:
        event = self.event
        event.pk, event.sequence = pk, sequence
        # Under the alias the caller reached it by (a request's "default" may be the API connection).
        mark_saved(event)
        if self.consumed and settings.OUTBOX_PUBLISH_ON_COMMIT:
            _publish_after_commit_add(
                self.connection, event=event, published=self.published, idle=frozenset(idle)
            )
        return event


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
    draft = EventDraft(
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        type=type,
        clinic_id=clinic_id,
        payload=payload,
        actor=actor,
    )
    with planned_cursor() as cursor:
        cursor.execute(f"WITH {draft.sql} SELECT {draft.returning} FROM new_event", draft.params)
        return draft.recorded(*cursor.fetchone())


class _AfterCommitPublish:
    """The events one transaction wrote, published straight after its commit: one broker batch,
    with no relay pass (claim, lock, select) on the hot path. An event whose own statement marked
    its outbox row published and recorded its idle consumers (EventDraft.published) costs no
    statement here; the others are marked, and their idle consumers found, by one UPDATE in
    autocommit (_nothing_to_do_drop). A row the beat relay claims at the same moment is
    published twice, which consumers tolerate (consume_once)."""

    def __init__(self) -> None:
        # (event id, event type, marked by its own statement, the consumers it recorded as idle)
        self.events: list[tuple[int, str, bool, frozenset[str]]] = []

    def __call__(self) -> None:
        pairs = [
            (consumer, event_id)
            for event_id, event_type, _marked, idle in self.events
            for consumer in settings.EVENT_CONSUMERS.get(event_type, ())
            if consumer not in idle
        ]
        unmarked = [event_id for event_id, _type, marked, _idle in self.events if not marked]
        try:
            if unmarked:
                pairs = _nothing_to_do_drop(pairs, outbox_events=unmarked)
            if (here := _consumers_here.get()) is not None:
                consumers, kept = here
                kept.extend(pair for pair in pairs if pair[0] in consumers)
                pairs = [pair for pair in pairs if pair[0] not in consumers]
            _broker_send(pairs, outbox_events=[event_id for event_id, *_rest in self.events])
        except BrokerError:
            # The broker is down: the rows are unpublished again and the beat relay retries them.
            logger.warning("outbox publish after commit failed; the relay will retry")


_consumers_here: ContextVar[tuple[frozenset[str], list[tuple[str, int]]] | None] = ContextVar(
    "event_consumers_here", default=None
)


@contextmanager
def event_consumers_run_here(consumers: frozenset[str]) -> Iterator[list[tuple[str, int]]]:
    """Inside, the publish straight after a commit leaves `consumers` out of its broker batch:
    each (consumer, event id) pair joins the list instead, for the caller to run in this process
    with event_consumers_run once the block is over (one task instead of two, with no trip
    through the broker and the worker's queue in between). The event's outbox row is published
    all the same, so a process that dies before or during that run leaves the pair to the lease
    pass (outbox_events_lease_expired_republish), as for a message its worker lost."""
    kept: list[tuple[str, int]] = []
    token = _consumers_here.set((consumers, kept))
    try:
        yield kept
    finally:
        _consumers_here.reset(token)


def event_consumers_run(pairs: list[tuple[str, int]]) -> None:
    """Run, here and now, the consumers event_consumers_run_here kept back. Each is the task a
    broker message would have run (consume_once: a second run of the same pair does nothing).
    One that fails is logged and left to the lease pass: the caller's own work is done."""
    for consumer, event_id in pairs:
        try:
            _task(consumer)(event_id)
        except Exception:
            logger.exception(
                "consumer %s failed on event %s in this process; the lease pass publishes it again",
                consumer,
                event_id,
            )


def _publish_after_commit_add(
    connection: Any, *, event: Event, published: bool, idle: frozenset[str]
) -> None:
    # Join the publish already registered at this savepoint level or above (it runs only if
    # this event commits too); otherwise register one.
    entry = (event.pk, event.type, published, idle)
    current = set(connection.savepoint_ids)
    for savepoints, callback, _robust in connection.run_on_commit:
        if isinstance(callback, _AfterCommitPublish) and set(savepoints) == current:
            callback.events.append(entry)
            return
    publish = _AfterCommitPublish()
    publish.events.append(entry)
    transaction.on_commit(publish, using=connection.alias)


def outbox_relay_all() -> int:
    """The beat relay's pass: unpublished events, the published events whose lease ran out
    unprocessed, then the tasks that are due."""
    return outbox_relay() + outbox_events_lease_expired_republish() + outbox_tasks_publish()


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
            event_consumers_send(
                [
                    (consumer, row.event_id)
                    for row in rows
                    for consumer in settings.EVENT_CONSUMERS.get(row.event.type, ())
                ]
            )
            _outbox_mark_published(OutboxMessage.objects.filter(pk__in=[row.pk for row in rows]))
            published += len(rows)
        if len(rows) < batch_size:
            return published


def event_consumers_send(pairs: list[tuple[str, int]]) -> None:
    """Send each (consumer, event id) to the broker on one connection, leaving out (and recording
    as handled) the consumers with nothing to do: for the relay, its lease pass and the
    reconciler. What the broker loses is sent again from the outbox row (its lease) or by the
    reconciler."""
    _broker_send(_nothing_to_do_drop(pairs, outbox_events=[]))


def _broker_send(pairs: list[tuple[str, int]], *, outbox_events: list[int] | None = None) -> None:
    """The one place an event reaches its consumers. `outbox_events` (the publish straight
    after a commit) are already marked published, and are marked unpublished again if the
    broker refuses the send (the beat relay then retries them); a process that dies in between
    leaves them to the lease pass."""
    if not pairs:
        return
    try:
        with app.producer_or_acquire() as producer:
            for consumer, event_id in pairs:
                app.send_task(consumer, args=[event_id], producer=producer)
    except BrokerError:
        if outbox_events:
            OutboxMessage.objects.filter(event_id__in=outbox_events).update(published_at=None)
        raise


def _nothing_to_do_drop(pairs: list[tuple[str, int]], *, outbox_events: list[int]) -> list[tuple[str, int]]:
    """Leave out the pairs whose consumer would do nothing (settings.EVENT_CONSUMER_IDLE_WHEN),
    recording them as handled in the same statement: the lease pass and the reconciler then see
    them done, as if the consumer had run. The same statement marks the outbox rows of
    `outbox_events` published."""
    conditions = settings.EVENT_CONSUMER_IDLE_WHEN
    candidates = [(consumer, event_id) for consumer, event_id in pairs if consumer in conditions]
    if not candidates and not outbox_events:
        return pairs
    consumers = sorted({consumer for consumer, _event_id in candidates})
    idle_when = " OR ".join(f"(pair.consumer = %s AND {conditions[consumer]})" for consumer in consumers)
    sql = f"""
        WITH pair AS (
            SELECT * FROM unnest(%s::text[], %s::bigint[]) AS pair(consumer, event_id)
        ), idle AS (
            SELECT pair.consumer, pair.event_id
            FROM pair JOIN events_event AS event ON event.id = pair.event_id
            WHERE {idle_when or "false"}
        ), handled AS (
            INSERT INTO events_processedevent (consumer, event_id, processed_at)
            SELECT consumer, event_id, now() FROM idle
            ON CONFLICT DO NOTHING
        ), published AS (
            UPDATE events_outboxmessage SET published_at = now(), attempts = attempts + 1
            WHERE event_id = ANY(%s::bigint[]) AND published_at IS NULL
        )
        SELECT consumer, event_id FROM idle
    """  # noqa: S608 - the conditions are the project's own constants, the values are parameters
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(
            sql,
            [
                [consumer for consumer, _event_id in candidates],
                [event_id for _consumer, event_id in candidates],
                *consumers,
                outbox_events,
            ],
        )
        idle = set(cursor.fetchall())
    return [pair for pair in pairs if pair not in idle]


def _outbox_mark_published(messages: QuerySet[OutboxMessage]) -> None:
    messages.update(published_at=timezone.now(), attempts=F("attempts") + 1)


def outbox_events_lease_expired_republish(*, batch_size: int = 200) -> int:
    """Publish again each event that some consumer has not processed one lease
    (OUTBOX_TASK_LEASE_SECONDS, longer than any consumer's hard time limit) after its last
    publication, to those consumers only; returns how many events were published again.

    This is what brings back a consumer killed with its worker (its message is held
    unacknowledged by the broker until the visibility timeout): within a lease plus a relay
    pass, not at the reconciler's pace. Consumers are idempotent (`consume_once`), so a resend
    that races a slow original is a no-op. A consumer owed as an OutboxTask row (Stripe was
    unavailable) waits for that row's due time instead. An event every consumer has processed
    is marked settled and not looked at again; one republished OUTBOX_EVENT_REPUBLISH_LIMIT
    times is left to the reconciler (saga.reconciler), so a consumer that keeps failing is not
    sent again every lease for ever.
    """
    lease = timedelta(seconds=settings.OUTBOX_TASK_LEASE_SECONDS)
    with transaction.atomic():
        now = timezone.now()
        rows = list(
            OutboxMessage.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(
                settled_at__isnull=True,
                published_at__lt=now - lease,
                attempts__lte=settings.OUTBOX_EVENT_REPUBLISH_LIMIT,
            )
            .select_related("event")
            .order_by("published_at")[:batch_size]
        )
        if not rows:
            return 0
        event_ids = [row.event_id for row in rows]
        processed = set(
            ProcessedEvent.objects.filter(event_id__in=event_ids).values_list("consumer", "event_id")
        )
        pending = {
            (row.event_id, consumer): outbox_task_key(task=consumer, args=[row.event_id])
            for row in rows
            for consumer in settings.EVENT_CONSUMERS.get(row.event.type, ())
            if (consumer, row.event_id) not in processed
        }
        owed = set(OutboxTask.objects.filter(key__in=pending.values()).values_list("key", flat=True))
        settled: list[int] = []
        republished: list[int] = []
        waiting: list[int] = []
        resent: list[tuple[str, int]] = []
        for row in rows:
            missing = [
                consumer
                for consumer in settings.EVENT_CONSUMERS.get(row.event.type, ())
                if (row.event_id, consumer) in pending
            ]
            if not missing:
                settled.append(row.pk)
                continue
            resend = [consumer for consumer in missing if pending[(row.event_id, consumer)] not in owed]
            resent += [(consumer, row.event_id) for consumer in resend]
            (republished if resend else waiting).append(row.pk)
        event_consumers_send(resent)
        OutboxMessage.objects.filter(pk__in=settled).update(settled_at=now)
        _outbox_mark_published(OutboxMessage.objects.filter(pk__in=republished))
        # Only owed rows left: look again one lease later.
        OutboxMessage.objects.filter(pk__in=waiting).update(published_at=now)
    if republished:
        logger.warning("outbox republished %d event(s) whose lease ran out unprocessed", len(republished))
    return len(republished)


def events_for(*, aggregate_type: str, aggregate_id: int) -> list[Event]:
    """An aggregate's events in order: from the event log, and, for a journey moved by
    `manage.py events_archive` (the log's first event is not its first), from the archive
    before them (one more query, only then)."""
    events = list(
        Event.objects.filter(aggregate_type=aggregate_type, aggregate_id=aggregate_id).order_by("sequence")
    )
    if events and events[0].sequence == 1:
        return events
    return archived_events_for(aggregate_type=aggregate_type, aggregate_id=aggregate_id) + events


def events_of(*, aggregate_type: str, aggregate_ids: list[int]) -> defaultdict[int, list[Event]]:
    """Several aggregates' events in order, by id (an empty list for one with none): `events_for`
    for a list, in one query, and one more for the archive only when some journeys moved there."""
    events: defaultdict[int, list[Event]] = defaultdict(list)
    for event in Event.objects.filter(aggregate_type=aggregate_type, aggregate_id__in=aggregate_ids).order_by(
        "sequence"
    ):
        events[event.aggregate_id].append(event)
    moved = [pk for pk in aggregate_ids if not events.get(pk) or events[pk][0].sequence != 1]
    for pk, archived in archived_events_of(aggregate_type=aggregate_type, aggregate_ids=moved).items():
        events[pk] = archived + events.get(pk, [])
    return events


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
    if not atomic:
        with planned_cursor() as cursor:
            cursor.execute(_EVENT_UNPROCESSED_SQL, [consumer, event_id])
            row = cursor.fetchone()
        if row is None or row[-1]:
            return False
        handle(_event_from_row(row))
        with planned_cursor() as cursor:
            cursor.execute(_PROCESSED_RECORD_SQL, [consumer, event_id])
        return True
    with transaction.atomic():
        # The claim and the read in one statement. A concurrent duplicate's claim waits on the
        # unique index until that delivery commits (then this one finds it done) or rolls back.
        with planned_cursor() as cursor:
            cursor.execute(_EVENT_CLAIM_SQL, [consumer, event_id])
            row = cursor.fetchone()
        if row is None:
            return False
        handle(_event_from_row(row))
    return True


_EVENT_COLUMNS = columns_sql(Event, "event")
# The event, and whether `consumer` has processed it (the last column).
_EVENT_UNPROCESSED_SQL = f"""
    SELECT {_EVENT_COLUMNS}, EXISTS (
        SELECT 1 FROM events_processedevent AS processed
        WHERE processed.consumer = %s::text AND processed.event_id = event.id
    )
    FROM events_event AS event WHERE event.id = %s::bigint
"""  # noqa: S608 - column names from the model, values are parameters
_PROCESSED_RECORD_SQL = """
    INSERT INTO events_processedevent (consumer, event_id, processed_at) VALUES (%s::text, %s::bigint, now())
    ON CONFLICT DO NOTHING
"""
# Record (consumer, event) as processed and read the event; no row if it was already processed
# (or no such event exists).
_EVENT_CLAIM_SQL = f"""
    WITH claim AS (
        INSERT INTO events_processedevent (consumer, event_id, processed_at)
        SELECT %s::text, id, now() FROM events_event WHERE id = %s::bigint
        ON CONFLICT DO NOTHING
        RETURNING event_id
    )
    SELECT {_EVENT_COLUMNS} FROM events_event AS event JOIN claim ON claim.event_id = event.id
"""  # noqa: S608 - column names from the model, values are parameters


def _event_from_row(row: Any) -> Event:
    event = instance_from_columns(Event, row[: column_count(Event)])
    assert event is not None  # noqa: S101 - the query selected an existing row
    return event


# --- Tasks owed (OutboxTask): published when due, retried by due time -------------------------


def outbox_task_key(*, task: str, args: list[Any]) -> str:
    return f"{task}:{json.dumps(args, separators=(',', ':'))}"


def outbox_task_enqueue(*, task: str, args: list[Any], delay_seconds: float = 0) -> bool:
    """Owe `task(*args)`, due in `delay_seconds`; call it inside the transaction of the row the
    task works on, so the work and the promise to do it commit together. True if it was not
    owed before.

    Owing the same work twice is one row (due at the earlier time). Published after commit
    (OUTBOX_PUBLISH_ON_COMMIT) when due now, else by the beat relay.
    """
    key = outbox_task_key(task=task, args=args)
    now = timezone.now()
    due_at = now + timedelta(seconds=delay_seconds)
    here = _run_here.get() if delay_seconds <= 0 else None
    connection = transaction.get_connection()
    with planned_cursor() as cursor:
        cursor.execute(
            _OUTBOX_TASK_OWE_SQL,
            {
                "task": task,
                "args": OutboxTask._meta.get_field("args").get_db_prep_save(args, connection),
                "key": key,
                # Run here: claimed for this process for one lease, as a publish would.
                "due_at": due_at + timedelta(seconds=settings.OUTBOX_TASK_LEASE_SECONDS)
                if here is not None
                else due_at,
                "publications": 1 if here is not None else 0,
                "now": now,
                "due_if_owed": due_at,
            },
        )
        found = cursor.fetchone()
    created = found is not None and bool(found[0])
    if created and here is not None:
        transaction.on_commit(lambda: here.append((task, args)))
        return created
    if settings.OUTBOX_PUBLISH_ON_COMMIT and delay_seconds <= 0:
        transaction.on_commit(lambda: _task_publish_after_commit(key))
    return created


# One statement: the row, or (owed already) its due time brought forward, never pushed back.
# The row comes back (xmax = 0 when inserted) unless it was owed already and due no later.
_OUTBOX_TASK_OWE_SQL = """
INSERT INTO events_outboxtask (task, args, key, due_at, publications, retries, last_error, created_at)
VALUES (%(task)s, %(args)s, %(key)s, %(due_at)s, %(publications)s, 0, '', %(now)s)
ON CONFLICT (key) DO UPDATE SET due_at = %(due_if_owed)s
WHERE events_outboxtask.due_at > %(due_if_owed)s
RETURNING (xmax = 0)
"""


_run_here: ContextVar[list[tuple[str, list[Any]]] | None] = ContextVar("outbox_run_here", default=None)


@contextmanager
def outbox_tasks_run_here() -> Iterator[list[tuple[str, list[Any]]]]:
    """Inside, a task owed due now is not published: its row is claimed for one lease, and the
    (task, args) it names join the list once its transaction commits, for the caller to run in
    this process with outbox_tasks_run, straight after (one task instead of two). A process that
    dies before or during that run leaves the row to the relay when the lease ends, as for a
    published task whose worker died."""
    owed: list[tuple[str, list[Any]]] = []
    token = _run_here.set(owed)
    try:
        yield owed
    finally:
        _run_here.reset(token)


def outbox_tasks_still_owed(candidates: list[tuple[str, list[Any]]]) -> list[tuple[str, list[Any]]]:
    """Those of `candidates` (task, args) whose outbox row is still there: not done yet."""
    keys = {outbox_task_key(task=task, args=args): (task, args) for task, args in candidates}
    found = OutboxTask.objects.filter(key__in=list(keys)).values_list("key", flat=True)
    return [keys[key] for key in found]


def outbox_tasks_run(owed: list[tuple[str, list[Any]]]) -> None:
    """Run, here and now, the tasks outbox_tasks_run_here collected (each settles its own row)."""
    for task, args in owed:
        _task(task)(*args)


def _task(name: str) -> Any:
    """The registered task `name`, to call in this process."""
    if name not in app.tasks:
        app.loader.import_default_modules()  # a process other than a worker: the task modules
    return app.tasks[name]


def _task_publish_after_commit(key: str) -> None:
    try:
        outbox_tasks_publish(key=key)
    except BrokerError:
        logger.warning("task publish after commit failed; the relay will retry")


def outbox_tasks_publish(*, key: str | None = None, batch_size: int = 200) -> int:
    """Publish the tasks that are due (or only the one under `key`); returns how many.

    Each published row is pushed one lease (OUTBOX_TASK_LEASE_SECONDS, longer than any such
    task's hard time limit) into the future before commit: a healthy run deletes or
    reschedules it first, and a lost message or a killed worker's task is published again
    when the lease ends. Rows are claimed with SKIP LOCKED, so relays may run in parallel.
    """
    published = 0
    lease = timedelta(seconds=settings.OUTBOX_TASK_LEASE_SECONDS)
    while True:
        with transaction.atomic():
            now = timezone.now()
            due = OutboxTask.objects.select_for_update(skip_locked=True).filter(due_at__lte=now)
            if key is not None:
                due = due.filter(key=key)
            rows = list(due.order_by("due_at")[:batch_size])
            if not rows:
                return published
            with app.producer_or_acquire() as producer:
                for row in rows:
                    app.send_task(row.task, args=row.args, producer=producer)
            OutboxTask.objects.filter(pk__in=[row.pk for row in rows]).update(
                due_at=now + lease, publications=F("publications") + 1
            )
            published += len(rows)
        if len(rows) < batch_size:
            return published


def outbox_task_done(*, task: str, args: list[Any]) -> None:
    """The work is done (or can never be done): nothing more is owed. (One statement: the
    ORM's delete would wrap it in a transaction of its own, three round trips.)"""
    with planned_cursor() as cursor:
        cursor.execute(
            "DELETE FROM events_outboxtask WHERE key = %s", [outbox_task_key(task=task, args=args)]
        )


def outbox_task_retry(*, task: str, args: list[Any], delay_seconds: float, error: str = "") -> None:
    """Try again in `delay_seconds`: the beat relay publishes the row when it is due. Work that
    was not owed as a row yet (an event's consumer, published by the event relay) becomes one."""
    key = outbox_task_key(task=task, args=args)
    due_at = timezone.now() + timedelta(seconds=delay_seconds)
    updated = OutboxTask.objects.filter(key=key).update(
        due_at=due_at, retries=F("retries") + 1, last_error=error[:500]
    )
    if not updated:
        OutboxTask.objects.get_or_create(
            key=key,
            defaults={"task": task, "args": args, "due_at": due_at, "retries": 1, "last_error": error[:500]},
        )


def outbox_task_retries(*, task: str, args: list[Any]) -> int:
    """How often the work has been retried so far (for the caller's backoff)."""
    found = (
        OutboxTask.objects.filter(key=outbox_task_key(task=task, args=args))
        .values_list("retries", flat=True)
        .first()
    )
    return found or 0


class RetryLater(Exception):
    """Raised by a service to have its task tried again at a given time (not counted as a
    failure of the partner: a circuit breaker holding calls back, for instance)."""

    def __init__(self, delay_seconds: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay_seconds:.0f}s")
        self.delay_seconds = delay_seconds


def outbox_task_run(
    *,
    task: str,
    args: list[Any],
    run: Callable[[], object],
    retry_on: tuple[type[Exception], ...],
    backoff: Callable[[int], float],
) -> str:
    """Run an owed task's work: done → the row goes; a transient error (`retry_on`) → due again
    after `backoff(retries so far)`; RetryLater → due at the time it names. Anything else
    leaves the row to be published again when its lease ends."""
    try:
        run()
    except RetryLater as later:
        outbox_task_retry(task=task, args=args, delay_seconds=later.delay_seconds, error=str(later))
        return "later"
    except retry_on as error:
        delay = backoff(outbox_task_retries(task=task, args=args))
        outbox_task_retry(task=task, args=args, delay_seconds=delay, error=str(error))
        return "retry"
    outbox_task_done(task=task, args=args)
    return "done"


def backoff_with_jitter(*, retries: int, base: float, ceiling: float) -> float:
    """Exponential backoff with jitter, capped at `ceiling` seconds."""
    top = min(ceiling, base * (2 ** min(retries, 30)))
    return random.uniform(top / 2, top)
