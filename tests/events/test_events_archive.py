"""`manage.py events_archive`: finished journeys past retention move whole from the event log to
its archive; nothing is lost, the timeline and the projections read them there, and both tables
stay append-only (invariant 3)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.utils import Error as DatabaseError
from django.utils import timezone
from rest_framework.test import APIClient

from events.archive import ARCHIVE_TABLE, archive_partitions_ensure
from events.models import Event
from events.services import events_for, events_of
from notifications.models import Notification
from prescriptions.models import Prescription, Status
from prescriptions.projections import projections_rebuild
from prescriptions.services import prescription_record_event
from support.selectors import patient_page
from tests.notifications.factories import NotificationFactory
from tests.patients.factories import AccessTokenFactory, ClinicClientFactory, ClinicFactory

pytestmark = pytest.mark.django_db

RETENTION_DAYS = 90


@pytest.fixture
def seeded(settings):  # type: ignore[no-untyped-def]
    # Prescriptions created from two years ago to now, 78 % of them delivered.
    settings.EVENTS_RETENTION_DAYS = RETENTION_DAYS
    call_command("bench_seed", prescriptions=60, patients=6)
    # Its shipping and delivery emails point at their events; the tests add the one they need.
    Notification.objects.all().delete()


def _log(prescription_id: int) -> list[tuple]:
    return list(
        Event.objects.filter(aggregate_type="prescription", aggregate_id=prescription_id)
        .order_by("sequence")
        .values_list("id", "sequence", "type", "payload", "actor", "created_at", "clinic_id")
    )


def _archived(prescription_id: int) -> list[tuple]:
    return [
        (e.id, e.sequence, e.type, e.payload, e.actor, e.created_at, e.clinic_id)
        for e in events_for(aggregate_type="prescription", aggregate_id=prescription_id)
    ]


def _before() -> str:
    return (timezone.now() - timedelta(days=365)).date().isoformat()


def test_a_date_inside_the_retention_period_is_refused_and_a_dry_run_moves_nothing(seeded):
    events = Event.objects.count()
    too_recent = (timezone.now() - timedelta(days=RETENTION_DAYS - 1)).date().isoformat()
    with pytest.raises(CommandError, match="inside the retention period"):
        call_command("events_archive", before=too_recent, execute=True)
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        call_command("events_archive", before="last year", execute=True)

    out = StringIO()
    call_command("events_archive", before=_before(), stdout=out)

    assert "dry run" in out.getvalue()
    assert Event.objects.count() == events


def test_finished_journeys_move_whole_and_read_the_same_from_the_archive(seeded):
    cutoff = timezone.now() - timedelta(days=365)
    old_finished = list(
        Prescription.objects.filter(
            status__in=[Status.DELIVERED, Status.CANCELLED, Status.REJECTED], updated_at__lt=cutoff
        ).order_by("pk")
    )
    assert len(old_finished) >= 5
    # Kept: one still in progress, one with a late event, one a notification points at.
    in_progress, late, notified, *moving = old_finished
    Prescription.objects.filter(pk=in_progress.pk).update(status=Status.DISPENSED)
    with connection.cursor() as cursor:  # a late event, as the gateway's webhooks would add
        cursor.execute(
            "INSERT INTO events_event (aggregate_type, aggregate_id, sequence, clinic_id, type, payload,"
            " actor, created_at) VALUES ('prescription', %s, 99, %s, 'prescription.note', '{}', 'test', now())",
            [late.pk, late.clinic_id],
        )
    NotificationFactory(
        event=Event.objects.filter(aggregate_id=notified.pk, aggregate_type="prescription").last(),
        patient=notified.patient,
    )
    recent = Prescription.objects.filter(
        status=Status.DELIVERED, updated_at__gt=timezone.now() - timedelta(days=30)
    )
    recent_events = {p.pk: _log(p.pk) for p in recent}
    before = {p.pk: _log(p.pk) for p in moving}
    kept = {p.pk: _log(p.pk) for p in (in_progress, late, notified)}
    total = Event.objects.count()
    Prescription.objects.filter(pk=in_progress.pk).update(status=in_progress.status)
    differences = projections_rebuild()  # bench_seed's tracking numbers are in no event
    Prescription.objects.filter(pk=in_progress.pk).update(status=Status.DISPENSED)

    out = StringIO()
    call_command("events_archive", before=cutoff.date().isoformat(), execute=True, batch=2, stdout=out)

    moved = sum(len(events) for events in before.values())
    assert f"archived {moved} events of {len(moving)} journeys" in out.getvalue()
    assert Event.objects.count() == total - moved
    # Whole journeys left the log, and read back identical (ids, order, payloads, times).
    assert {pk: _log(pk) for pk in before} == dict.fromkeys(before, [])
    assert {pk: _archived(pk) for pk in before} == before
    # Everything else stayed, untouched.
    assert {pk: _log(pk) for pk in kept} == kept
    assert {p.pk: _log(p.pk) for p in recent} == recent_events
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {ARCHIVE_TABLE}")
        assert cursor.fetchone()[0] == moved
    # A second run has nothing more to move; it still holds the notified one.
    again = StringIO()
    call_command("events_archive", before=cutoff.date().isoformat(), execute=True, stdout=again)
    assert "archived 0 events of 0 journeys finished before" in again.getvalue()
    assert "; 1 kept in the log" in again.getvalue()
    # The read model rebuilds from log + archive exactly as it did from the log alone.
    Prescription.objects.filter(pk=in_progress.pk).update(status=in_progress.status)
    assert projections_rebuild() == differences


def test_the_archive_is_append_only_and_the_log_refuses_deleting_what_is_not_archived(seeded):
    cutoff = timezone.now() - timedelta(days=365)
    kept = Prescription.objects.filter(status=Status.DELIVERED, updated_at__lt=cutoff).order_by("pk").first()
    assert kept is not None
    Prescription.objects.filter(pk=kept.pk).update(status=Status.DISPENSED)  # not finished: stays
    call_command("events_archive", before=cutoff.date().isoformat(), execute=True, stdout=StringIO())
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {ARCHIVE_TABLE} LIMIT 1")
        archived_id = cursor.fetchone()[0]
    unarchived = Event.objects.filter(aggregate_type="prescription", aggregate_id=kept.pk).first()
    assert unarchived is not None
    with connection.cursor() as cursor:  # each month made has the clinic tables' forced RLS
        cursor.execute(
            "SELECT c.relname, c.relrowsecurity AND c.relforcerowsecurity FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            [ARCHIVE_TABLE],
        )
        partitions = dict(cursor.fetchall())
    assert partitions
    assert partitions == dict.fromkeys(partitions, True)

    refused = []
    for statement, params in [
        (f"UPDATE {ARCHIVE_TABLE} SET actor = 'x' WHERE id = %s", [archived_id]),
        (f"DELETE FROM {ARCHIVE_TABLE} WHERE id = %s", [archived_id]),
        ("DELETE FROM events_event WHERE id = %s", [unarchived.pk]),
        ("UPDATE events_event SET actor = 'x' WHERE id = %s", [unarchived.pk]),
    ]:
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, params)
        refused.append(statement.split()[0])
    assert refused == ["UPDATE", "DELETE", "DELETE", "UPDATE"]

    # A copy that differs from the row (here: its payload) does not license the delete either.
    archive_partitions_ensure(unarchived.created_at, unarchived.created_at)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {ARCHIVE_TABLE} (id, aggregate_type, aggregate_id, sequence, clinic_id, type,"
            " payload, actor, created_at) SELECT id, aggregate_type, aggregate_id, sequence, clinic_id, type,"
            " '{\"forged\": true}', actor, created_at FROM events_event WHERE id = %s",
            [unarchived.pk],
        )
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM events_event WHERE id = %s", [unarchived.pk])
    assert Event.objects.filter(pk=unarchived.pk).exists()


def test_a_clinic_reads_an_archived_journey_s_timeline_through_its_own_api(seeded):
    cutoff = timezone.now() - timedelta(days=365)
    prescription = (
        Prescription.objects.filter(status=Status.DELIVERED, updated_at__lt=cutoff).order_by("pk").first()
    )
    assert prescription is not None
    expected = [
        event.type for event in events_for(aggregate_type="prescription", aggregate_id=prescription.pk)
    ]
    call_command("events_archive", before=cutoff.date().isoformat(), execute=True, stdout=StringIO())
    assert not Event.objects.filter(aggregate_type="prescription", aggregate_id=prescription.pk).exists()
    api = APIClient()
    own = AccessTokenFactory(application=ClinicClientFactory(clinic=prescription.clinic).application)
    other = AccessTokenFactory(application=ClinicClientFactory(clinic=ClinicFactory()).application)

    api.credentials(HTTP_AUTHORIZATION=f"Bearer {own.token}")
    response = api.get(f"/api/v1/prescriptions/{prescription.pk}/")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {other.token}")
    foreign = api.get(f"/api/v1/prescriptions/{prescription.pk}/")

    assert response.status_code == 200, response.content
    assert [event["type"] for event in response.json()["timeline"]] == expected
    assert len(expected) >= 2
    assert foreign.status_code == 404
    # Support's patient page and the agents' reads show it too.
    page = patient_page(patient=prescription.patient)
    timelines = {view.prescription.pk: [event.type for event in view.timeline] for view in page.prescriptions}
    assert timelines[prescription.pk] == expected
    assert [
        e.type
        for e in events_of(aggregate_type="prescription", aggregate_ids=[prescription.pk])[prescription.pk]
    ] == expected


def test_a_late_event_continues_an_archived_journey_and_the_timeline_stays_whole(seeded):
    cutoff = timezone.now() - timedelta(days=365)
    prescription = (
        Prescription.objects.filter(status=Status.CANCELLED, updated_at__lt=cutoff).order_by("pk").first()
        or Prescription.objects.filter(status=Status.DELIVERED, updated_at__lt=cutoff).order_by("pk").first()
    )
    assert prescription is not None
    journey = _log(prescription.pk)
    call_command("events_archive", before=cutoff.date().isoformat(), execute=True, stdout=StringIO())
    assert _log(prescription.pk) == []

    # A refund note years later: recorded after the archived events, not as a new first event.
    assert prescription_record_event(
        prescription_id=prescription.pk, event_type="prescription.refund_noted", actor="test"
    )
    late = Event.objects.get(aggregate_type="prescription", aggregate_id=prescription.pk)
    assert late.sequence == len(journey) + 1
    timeline = events_for(aggregate_type="prescription", aggregate_id=prescription.pk)
    assert [e.sequence for e in timeline] == list(range(1, len(journey) + 2))
    assert [e.id for e in timeline] == [row[0] for row in journey] + [late.pk]
    many = events_of(aggregate_type="prescription", aggregate_ids=[prescription.pk])
    assert [e.id for e in many[prescription.pk]] == [e.id for e in timeline]
