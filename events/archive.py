"""Moving finished prescriptions' events out of the event log, into `events_event_archive`.

The event log stays append-only (invariant 3): a row leaves `events_event` only in the
transaction that copies it to the archive, and the log's trigger refuses the DELETE of any row
whose identical copy is not already there (events migration 0009). The archive is append-only
too, range-partitioned by month on `created_at`; a month is dropped as a whole, by a person,
when the retention policy says so (README, "Growth of the event and audit tables").

A journey is moved whole: all of one prescription's events, once it has been delivered,
cancelled or rejected and its last event is older than the cutoff. A journey whose events a
notification, a clinic webhook delivery or an unsettled outbox row still refers to stays where
it is (those records point at the event by key). Settled outbox rows and consumers' processed
markers of the moved events are bookkeeping and are deleted with them. `events_event_archive_journey`
keeps each moved journey's last sequence, where an event recorded for it later continues.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import import_module
from typing import Any

from django.db import connection, transaction

from events.models import Event

ARCHIVE_TABLE = "events_event_archive"
JOURNEYS_TABLE = "events_event_archive_journey"
# prescriptions.models.Status values after which nothing happens to a prescription.
FINISHED = ("delivered", "cancelled", "rejected")
COLUMNS = "id, aggregate_type, aggregate_id, sequence, clinic_id, type, payload, actor, created_at"


@dataclass(frozen=True)
class ArchiveResult:
    journeys: int
    events: int
    held: int  # finished journeys past the cutoff kept because a record still refers to them
    last_id: int  # the highest prescription id looked at (0: none left)


def journeys_finished_before(cutoff: datetime, *, limit: int, after: int = 0) -> list[int]:
    """Ids (above `after`, in order) of prescriptions delivered, cancelled or rejected whose
    events, in the log, all predate `cutoff`."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT p.id FROM prescriptions_prescription p
             WHERE p.id > %s AND p.status = ANY(%s) AND p.updated_at < %s
               AND EXISTS (SELECT 1 FROM events_event e
                            WHERE e.aggregate_type = 'prescription' AND e.aggregate_id = p.id)
               AND NOT EXISTS (SELECT 1 FROM events_event e
                                WHERE e.aggregate_type = 'prescription' AND e.aggregate_id = p.id
                                  AND e.created_at >= %s)
             ORDER BY p.id LIMIT %s
            """,
            [after, list(FINISHED), cutoff, cutoff, limit],
        )
        return [row[0] for row in cursor.fetchall()]


def journeys_referenced(prescription_ids: list[int]) -> set[int]:
    """Those of the prescriptions whose events a notification, a webhook delivery or an
    unsettled outbox row refers to."""
    if not prescription_ids:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT DISTINCT e.aggregate_id FROM events_event e
             WHERE e.aggregate_type = 'prescription' AND e.aggregate_id = ANY(%s)
               AND (EXISTS (SELECT 1 FROM notifications_notification n WHERE n.event_id = e.id)
                    OR EXISTS (SELECT 1 FROM events_webhookdelivery d WHERE d.event_id = e.id)
                    OR EXISTS (SELECT 1 FROM events_outboxmessage o
                                WHERE o.event_id = e.id AND o.settled_at IS NULL))
            """,
            [prescription_ids],
        )
        return {row[0] for row in cursor.fetchall()}


def _month_after(month: date) -> date:
    return month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1, day=1)


def _months(first: date, last: date) -> Iterator[date]:
    month = first.replace(day=1)
    while month <= last:
        yield month
        month = _month_after(month)


def archive_partitions_ensure(first: datetime, last: datetime) -> list[str]:
    """Create the archive's monthly partitions from `first` to `last` that do not exist yet."""
    # Each partition gets the row-level security of every clinic table (patients migration 0004).
    rls = import_module("patients.migrations.0004_row_level_security")
    created = []
    with connection.cursor() as cursor:
        for month in _months(first.astimezone(UTC).date(), last.astimezone(UTC).date()):
            following = _month_after(month)
            name = f"{ARCHIVE_TABLE}_{month:%Y_%m}"
            cursor.execute("SELECT to_regclass(%s)", [name])
            if cursor.fetchone()[0] is not None:
                continue
            cursor.execute(
                f"CREATE TABLE {name} PARTITION OF {ARCHIVE_TABLE} "
                f"FOR VALUES FROM ('{month:%Y-%m-%d} 00:00+00') TO ('{following:%Y-%m-%d} 00:00+00')"
            )
            cursor.execute(rls._enable(name, "clinic_id = app_clinic_id()"))
            created.append(name)
    return created


def journeys_archive(*, cutoff: datetime, limit: int, after: int = 0) -> ArchiveResult:
    """Move the next `limit` finished journeys (ids above `after`) older than `cutoff` to the
    archive, in one transaction."""
    with transaction.atomic():
        candidates = journeys_finished_before(cutoff, limit=limit, after=after)
        held = journeys_referenced(candidates)
        moving = [pk for pk in candidates if pk not in held]
        last_id = max(candidates, default=0)
        if not moving:
            return ArchiveResult(journeys=0, events=0, held=len(held), last_id=last_id)
        # Lock the journeys: a late event for one of them waits, then lands in the log again.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM prescriptions_prescription WHERE id = ANY(%s) FOR UPDATE", [moving]
            )
            cursor.execute(
                "SELECT min(created_at), max(created_at) FROM events_event "
                "WHERE aggregate_type = 'prescription' AND aggregate_id = ANY(%s)",
                [moving],
            )
            first, last = cursor.fetchone()
        archive_partitions_ensure(first, last)
        with connection.cursor() as cursor:
            selected = "FROM events_event WHERE aggregate_type = 'prescription' AND aggregate_id = ANY(%s)"
            cursor.execute(f"INSERT INTO {ARCHIVE_TABLE} ({COLUMNS}) SELECT {COLUMNS} {selected}", [moving])
            moved = cursor.rowcount
            # Where each journey stopped, for an event recorded after (events.services).
            cursor.execute(
                f"""
                INSERT INTO {JOURNEYS_TABLE} (aggregate_type, aggregate_id, clinic_id, last_sequence)
                SELECT aggregate_type, aggregate_id, max(clinic_id), max(sequence) {selected}
                 GROUP BY aggregate_type, aggregate_id
                ON CONFLICT (aggregate_type, aggregate_id)
                DO UPDATE SET last_sequence = EXCLUDED.last_sequence, archived_at = now()
                """,
                [moving],
            )
            cursor.execute(
                f"DELETE FROM events_processedevent WHERE event_id IN (SELECT id {selected})", [moving]
            )
            cursor.execute(
                f"DELETE FROM events_outboxmessage WHERE event_id IN (SELECT id {selected})", [moving]
            )
            cursor.execute(f"DELETE {selected}", [moving])
            if cursor.rowcount != moved:
                raise RuntimeError(f"archived {moved} events but removed {cursor.rowcount}")
    return ArchiveResult(journeys=len(moving), events=moved, held=len(held), last_id=last_id)


def archived_events_for(*, aggregate_type: str, aggregate_id: int) -> list[Event]:
    """An aggregate's archived events, in order, as (unsaved) Event objects."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {COLUMNS} FROM {ARCHIVE_TABLE} WHERE aggregate_type = %s AND aggregate_id = %s "
            "ORDER BY sequence",
            [aggregate_type, aggregate_id],
        )
        return [_event(row) for row in cursor.fetchall()]


def archived_events_of(*, aggregate_type: str, aggregate_ids: list[int]) -> dict[int, list[Event]]:
    """The archived events of several aggregates, in order, by aggregate id (one query)."""
    found: dict[int, list[Event]] = {}
    if not aggregate_ids:
        return found
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {COLUMNS} FROM {ARCHIVE_TABLE} WHERE aggregate_type = %s AND aggregate_id = ANY(%s) "
            "ORDER BY aggregate_id, sequence",
            [aggregate_type, aggregate_ids],
        )
        for row in cursor.fetchall():
            event = _event(row)
            found.setdefault(event.aggregate_id, []).append(event)
    return found


def _event(row: tuple[Any, ...]) -> Event:
    names = [name.strip() for name in COLUMNS.split(",")]
    values = dict(zip(names, row, strict=True))
    if isinstance(values["payload"], str):
        values["payload"] = json.loads(values["payload"])
    return Event(**values)


def archived_prescription_payloads() -> Iterator[tuple[int, dict[str, Any]]]:
    """(prescription id, payload) of every archived prescription event, in journey order."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT aggregate_id, payload FROM {ARCHIVE_TABLE} WHERE aggregate_type = 'prescription' "
            "AND type <> 'prescription.projection_repaired' ORDER BY aggregate_id, sequence"
        )
        while rows := cursor.fetchmany(2000):
            for aggregate_id, payload in rows:
                yield aggregate_id, json.loads(payload) if isinstance(payload, str) else payload
