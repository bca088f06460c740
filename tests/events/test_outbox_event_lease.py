"""Published events have a lease: a consumer that has not processed an event one lease after
its publication (its task killed with its worker, its message held by the broker) is sent the
event again by the beat relay, within a minute, without waiting for the reconciler."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from config.celery import app
from events.models import OutboxMessage, ProcessedEvent
from events.services import outbox_relay, outbox_relay_all, outbox_task_retry
from saga import journey
from tests.events.test_outbox import HARMLESS, Broker, prescriptions_created, received_event_ids

pytestmark = pytest.mark.django_db

OTHER = "tests.events.other"


@pytest.fixture
def broker(monkeypatch, settings) -> Broker:  # type: ignore[no-untyped-def]
    settings.EVENT_CONSUMERS = {"prescription.received": [HARMLESS, OTHER]}
    settings.OUTBOX_TASK_LEASE_SECONDS = 45
    settings.OUTBOX_EVENT_REPUBLISH_LIMIT = 5
    fake = Broker()
    monkeypatch.setattr(app, "send_task", fake.send_task)
    return fake


def published(count: int, broker: Broker) -> list[int]:
    """`count` received events, published once (as after commit), the broker's log emptied."""
    prescriptions_created(count)
    assert outbox_relay() == count
    broker.published.clear()
    return received_event_ids()


def lease_runs_out(*event_ids: int, seconds: int = 46) -> None:
    OutboxMessage.objects.filter(event_id__in=event_ids).update(
        published_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_within_its_lease_an_unprocessed_event_is_not_sent_again(broker):
    (event_id,) = published(1, broker)
    lease_runs_out(event_id, seconds=40)

    assert outbox_relay_all() == 0
    assert broker.published == []


def test_past_its_lease_an_event_goes_again_to_the_consumers_that_have_not_processed_it_only(broker):
    (event_id,) = published(1, broker)
    ProcessedEvent.objects.create(consumer=HARMLESS, event_id=event_id)
    lease_runs_out(event_id)

    assert outbox_relay_all() == 1

    assert broker.published == [(OTHER, [event_id])]
    message = OutboxMessage.objects.get(event_id=event_id)
    assert message.attempts == 2
    assert message.settled_at is None
    assert timezone.now() - message.published_at < timedelta(seconds=5)  # a new lease
    # The next pass, within the new lease, sends nothing
    assert outbox_relay_all() == 0
    assert broker.published == [(OTHER, [event_id])]


def test_an_event_every_consumer_processed_is_settled_and_not_sent(broker):
    (event_id,) = published(1, broker)
    ProcessedEvent.objects.bulk_create(
        [
            ProcessedEvent(consumer=HARMLESS, event_id=event_id),
            ProcessedEvent(consumer=OTHER, event_id=event_id),
        ]
    )
    lease_runs_out(event_id)

    assert outbox_relay_all() == 0

    assert broker.published == []
    assert OutboxMessage.objects.get(event_id=event_id).settled_at is not None


def test_a_consumer_owed_as_a_due_row_waits_for_its_due_time_not_the_lease(broker):
    # Stripe was unavailable for OTHER: its retry is a row due in ten minutes
    (event_id,) = published(1, broker)
    outbox_task_retry(task=OTHER, args=[event_id], delay_seconds=600)
    ProcessedEvent.objects.create(consumer=HARMLESS, event_id=event_id)
    lease_runs_out(event_id)

    assert outbox_relay_all() == 0

    assert broker.published == []
    message = OutboxMessage.objects.get(event_id=event_id)
    assert message.settled_at is None
    assert timezone.now() - message.published_at < timedelta(seconds=5)  # looked at again later


def test_an_event_republished_up_to_the_limit_is_left_to_the_reconciler(broker, settings):
    settings.OUTBOX_EVENT_REPUBLISH_LIMIT = 2
    (event_id,) = published(1, broker)

    for _ in range(2):
        lease_runs_out(event_id)
        assert outbox_relay_all() == 1
    lease_runs_out(event_id)

    assert outbox_relay_all() == 0
    assert broker.published == [(HARMLESS, [event_id]), (OTHER, [event_id])] * 2
    assert OutboxMessage.objects.get(event_id=event_id).attempts == 3


def test_the_lease_pass_reads_a_fixed_number_of_queries(broker, django_assert_max_num_queries):
    event_ids = published(12, broker)
    ProcessedEvent.objects.bulk_create(
        [ProcessedEvent(consumer=HARMLESS, event_id=pk) for pk in event_ids[:6]]
    )
    lease_runs_out(*event_ids)

    with django_assert_max_num_queries(12):
        assert outbox_relay_all() == 12

    assert len(broker.published) == 6 + 12


def test_every_consumer_finishes_within_the_lease(settings):
    # A healthy run must be over (its ProcessedEvent written) before the relay sends it again.
    app.loader.import_default_modules()
    consumers = {name for names in journey.EVENT_CONSUMERS.values() for name in names}

    assert len(consumers) >= 8
    too_long = {
        name: app.tasks[name].time_limit
        for name in consumers
        if not (app.tasks[name].time_limit or 10**6) < settings.OUTBOX_TASK_LEASE_SECONDS
    }
    assert too_long == {}
