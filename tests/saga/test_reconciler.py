"""The reconciler re-enqueues work whose broker message was lost, and nothing else."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from config.celery import app
from events.models import Event, OutboxMessage
from events.services import event_record
from pharmacy.models import Dispatch
from pharmacy.services import DISPATCH_SEND_TASK
from prescriptions.models import Prescription
from saga import reconciler
from tests.events.factories import ProcessedEventFactory
from tests.events.test_outbox import prescriptions_created
from tests.outbox import owed_tasks
from tests.pharmacy.factories import DispatchFactory, approved_prescription

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("core_consumers_only")]

CHECK = "prescriptions.tasks.prescription_check"


@pytest.fixture
def sent(monkeypatch, settings) -> list[tuple[str, list[int]]]:  # type: ignore[no-untyped-def]
    """The broker's edge: what the reconciler (and the relay it runs) published."""
    settings.RECONCILE_STALE_SECONDS = 60
    settings.RECONCILE_DISPATCH_STALE_SECONDS = 120
    published: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **_: published.append((name, list(args))))
    return published


def age(prescription: Prescription, seconds: int) -> None:
    Prescription.objects.filter(pk=prescription.pk).update(
        updated_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_a_received_prescription_whose_check_never_ran_gets_its_event_sent_again(sent):
    # Given three received prescriptions, already published (the broker then lost them)
    stale, fresh, checked = prescriptions_created(3)
    OutboxMessage.objects.update(published_at=timezone.now())
    age(stale, 61)
    age(checked, 61)
    fresh_event = Event.objects.get(aggregate_id=checked.pk, type="prescription.received")
    ProcessedEventFactory(consumer=CHECK, event=fresh_event)

    # When the reconciler runs
    report = reconciler.stuck_work_reconcile()

    # Then only the stale, unchecked one is sent again, to the checks consumer
    stale_event = Event.objects.get(aggregate_id=stale.pk, type="prescription.received")
    assert sent == [(CHECK, [stale_event.pk])]
    assert report == {"outbox": 0, "events": 1, "dispatches": 0}
    assert Prescription.objects.get(pk=fresh.pk).status == "received"


def test_the_reconciler_publishes_outbox_rows_the_relay_never_sent(sent):
    (prescription,) = prescriptions_created(1)

    report = reconciler.stuck_work_reconcile()

    event = Event.objects.get(aggregate_id=prescription.pk)
    assert sent == [(CHECK, [event.pk])]
    assert report == {"outbox": 1, "events": 0, "dispatches": 0}
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 0


def test_a_paid_prescription_without_a_dispatch_is_sent_to_the_dispatch_consumer(sent, clinic_a, paracetamol):
    prescription = approved_prescription(clinic_a, paracetamol)
    OutboxMessage.objects.update(published_at=timezone.now())
    age(prescription, 61)

    reconciler.stuck_work_reconcile()

    paid = Event.objects.get(aggregate_id=prescription.pk, type="prescription.paid")
    assert sent == [("pharmacy.tasks.dispatch_on_approved", [paid.pk])]


def test_a_pending_dispatch_untouched_past_the_limit_is_sent_again_once(
    sent, clinic_a, paracetamol, monkeypatch
):
    # Given a paid prescription with a pending dispatch nobody has touched for 121 s
    prescription = approved_prescription(clinic_a, paracetamol)
    OutboxMessage.objects.update(published_at=timezone.now())
    dispatch = DispatchFactory(prescription=prescription)
    ProcessedEventFactory(
        consumer="pharmacy.tasks.dispatch_on_approved",
        event=Event.objects.get(aggregate_id=prescription.pk, type="prescription.paid"),
    )
    age(prescription, 600)
    Dispatch.objects.filter(pk=dispatch.pk).update(updated_at=timezone.now() - timedelta(seconds=121))

    # When the reconciler runs twice in a row
    first = reconciler.stuck_work_reconcile()
    second = reconciler.stuck_work_reconcile()

    # Then the send is owed once (the first pass marks the row touched) and nothing else
    assert owed_tasks() == [(DISPATCH_SEND_TASK, [dispatch.pk])]
    assert first == {"outbox": 0, "events": 0, "dispatches": 1}
    assert second == {"outbox": 0, "events": 0, "dispatches": 0}
    assert sent == []


def test_the_reconciler_uses_a_constant_number_of_queries(sent, django_assert_max_num_queries):
    prescriptions = prescriptions_created(12)
    OutboxMessage.objects.update(published_at=timezone.now())
    for prescription in prescriptions:
        age(prescription, 61)

    with django_assert_max_num_queries(12):
        reconciler.stuck_work_reconcile()

    assert len(sent) == 12


def test_the_reconciler_runs_every_minute_from_beat(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["stuck-work-reconcile"]
    assert entry == {"task": "events.tasks.stuck_work_reconcile", "schedule": 60.0}
    from saga import tasks

    assert tasks.stuck_work_reconcile.name == "events.tasks.stuck_work_reconcile"


def test_an_event_past_the_waiting_states_whose_consumer_never_ran_is_sent_again_once_settled_never(
    sent, settings
):
    # Given two shipped-like events published long ago (states no consumer moves on from):
    # one consumer processed the first; the broker lost the second's message
    settings.EVENT_CONSUMERS = {"prescription.shipped": ["notifications.tasks.notification_on_event"]}
    settings.EVENT_CONSUMER_IDLE_WHEN = {}  # the patients have no contact details
    first, second = prescriptions_created(2)
    events = []
    for prescription in (first, second):
        with transaction.atomic():
            events.append(
                event_record(
                    aggregate_type="prescription", aggregate_id=prescription.pk, type="prescription.shipped"
                )
            )
    OutboxMessage.objects.update(published_at=timezone.now() - timedelta(seconds=61))
    ProcessedEventFactory(consumer="notifications.tasks.notification_on_event", event=events[0])

    # When the reconciler runs twice, the consumer having processed the resend in between
    report = reconciler.stuck_work_reconcile()
    ProcessedEventFactory(consumer="notifications.tasks.notification_on_event", event=events[1])
    again = reconciler.stuck_work_reconcile()

    # Then only the lost one was sent again, and both events are settled (not looked at again)
    assert sent == [("notifications.tasks.notification_on_event", [events[1].pk])]
    assert (report["events"], again["events"]) == (1, 0)
    assert OutboxMessage.objects.filter(event__in=events, settled_at__isnull=True).count() == 0
