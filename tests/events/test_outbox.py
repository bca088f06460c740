"""The transactional outbox and its relay: every event published, exactly once per pass."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from kombu.exceptions import OperationalError

from config.celery import app
from events.models import Event, OutboxMessage
from events.services import outbox_relay
from prescriptions import services
from prescriptions.models import Prescription
from tests.patients.factories import ClinicFactory, PatientFactory
from tests.prescriptions.factories import MedicationFactory, PrescriberFactory, one_a_day

pytestmark = pytest.mark.django_db

HARMLESS = "tests.events.harmless"


class Broker:
    """Stands in for `app.send_task`, the edge of the machine: records what was published."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.published: list[tuple[str, list[int]]] = []
        self.published_by: dict[int, list[int]] = {}  # thread id -> event ids it published
        self.delay = delay
        self.failing = False
        # When set, each thread's first publish waits there for the other threads' first.
        self.rendezvous: threading.Barrier | None = None
        self._lock = threading.Lock()

    def send_task(self, name: str, args: list[int] | None = None, **options: object) -> None:
        if self.failing:
            raise OperationalError("Error 111 connecting to the broker. Connection refused.")
        thread = threading.get_ident()
        if self.rendezvous is not None and thread not in self.published_by:
            self.rendezvous.wait(timeout=30)
        time.sleep(self.delay)
        with self._lock:
            self.published.append((name, list(args or [])))
            self.published_by.setdefault(thread, []).extend(args or [])


@pytest.fixture
def broker(monkeypatch, settings) -> Broker:  # type: ignore[no-untyped-def]
    settings.EVENT_CONSUMERS = {"prescription.received": [HARMLESS]}
    fake = Broker()
    monkeypatch.setattr(app, "send_task", fake.send_task)
    return fake


def prescriptions_created(count: int) -> list[Prescription]:
    clinic = ClinicFactory()
    prescriber = PrescriberFactory(clinic=clinic)
    patient = PatientFactory(clinic=clinic)
    medication = MedicationFactory()
    item = one_a_day(medication)
    return [
        services.prescription_create(clinic=clinic, patient=patient, prescriber=prescriber, items=[item])
        for _ in range(count)
    ]


def received_event_ids() -> list[int]:
    return sorted(Event.objects.filter(type="prescription.received").values_list("pk", flat=True))


def unpublished() -> int:
    return OutboxMessage.objects.filter(published_at__isnull=True).count()


def test_the_relay_publishes_a_new_prescription_once_to_its_consumer(broker):
    (prescription,) = prescriptions_created(1)
    event = Event.objects.get(aggregate_type="prescription", aggregate_id=prescription.pk)

    published = outbox_relay()

    assert published == 1
    assert broker.published == [(HARMLESS, [event.pk])]
    message = OutboxMessage.objects.get()
    assert message.event == event
    assert message.published_at is not None
    assert message.attempts == 1


def test_a_second_relay_publishes_nothing(broker):
    prescriptions_created(1)
    outbox_relay()
    published_at = OutboxMessage.objects.get().published_at

    published = outbox_relay()

    assert published == 0
    assert len(broker.published) == 1
    assert OutboxMessage.objects.get().published_at == published_at
    assert OutboxMessage.objects.get().attempts == 1


def test_an_event_with_two_consumers_is_sent_to_each(broker, settings):
    settings.EVENT_CONSUMERS = {"prescription.received": [HARMLESS, "tests.events.also_harmless"]}
    (prescription,) = prescriptions_created(1)
    event_id = Event.objects.get(aggregate_id=prescription.pk).pk

    assert outbox_relay() == 1

    assert broker.published == [(HARMLESS, [event_id]), ("tests.events.also_harmless", [event_id])]


def test_an_event_nobody_consumes_gets_no_outbox_row(broker, settings):
    settings.EVENT_CONSUMERS = {}
    prescriptions_created(1)

    assert outbox_relay() == 0

    assert OutboxMessage.objects.count() == 0
    assert broker.published == []


def test_the_relay_works_through_the_backlog_in_batches_in_order(broker):
    prescriptions_created(7)

    published = outbox_relay(batch_size=3)

    assert published == 7
    assert [args[0] for _name, args in broker.published] == received_event_ids()
    assert unpublished() == 0


def test_when_the_broker_is_down_nothing_is_marked_and_a_later_relay_publishes_everything(broker):
    prescriptions_created(3)
    broker.failing = True

    with pytest.raises(OperationalError):
        outbox_relay()

    assert broker.published == []
    assert unpublished() == 3

    broker.failing = False
    published = outbox_relay()

    assert published == 3
    assert sorted(args[0] for _name, args in broker.published) == received_event_ids()
    assert unpublished() == 0


@pytest.mark.django_db(transaction=True)
def test_two_relays_running_at_once_each_publish_rows_and_together_every_row_exactly_once(broker):
    prescriptions_created(50)
    broker.delay = 0.002  # long enough that the two relays' batches interleave
    # Each relay's first publish waits for the other's: both hold a claimed batch at the same
    # moment, so the second can only have got rows by skipping the first one's locked rows.
    broker.rendezvous = threading.Barrier(2)

    def relay() -> tuple[int, int]:
        try:
            connection.ensure_connection()
            return threading.get_ident(), outbox_relay(batch_size=5)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: relay(), range(2)))

    counts = dict(results)
    assert len(counts) == 2
    for thread, count in counts.items():
        assert count >= 5
        assert len(broker.published_by[thread]) == count
    first, second = (set(ids) for ids in broker.published_by.values())
    assert first.isdisjoint(second)
    published_ids = [args[0] for _name, args in broker.published]
    assert sum(counts.values()) == 50
    assert sorted(published_ids) == received_event_ids()
    assert unpublished() == 0


def test_after_commit_the_transaction_publishes_its_own_events_and_leaves_older_rows_to_the_relay(
    broker, settings, django_capture_on_commit_callbacks
):
    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    (older,) = prescriptions_created(1)
    settings.OUTBOX_PUBLISH_ON_COMMIT = True

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        (newer,) = prescriptions_created(1)

    assert len(callbacks) == 1
    newer_event = Event.objects.get(aggregate_type="prescription", aggregate_id=newer.pk)
    assert broker.published == [(HARMLESS, [newer_event.pk])]
    assert OutboxMessage.objects.get(event=newer_event).published_at is not None
    assert OutboxMessage.objects.get(event__aggregate_id=older.pk).published_at is None
    assert outbox_relay() == 1


def test_after_commit_a_broker_outage_leaves_the_rows_for_the_relay(
    broker, settings, django_capture_on_commit_callbacks
):
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    broker.failing = True

    with django_capture_on_commit_callbacks(execute=True):
        prescriptions_created(2)

    assert broker.published == []
    assert unpublished() == 2
    broker.failing = False
    assert outbox_relay() == 2
    assert sorted(args[0] for _name, args in broker.published) == received_event_ids()


def test_an_event_of_a_clinic_without_a_webhook_endpoint_costs_the_webhook_consumer_no_task(broker, settings):
    from events.models import ProcessedEvent
    from saga.journey import CLINIC_WEBHOOK as CLINIC_WEBHOOK_CONSUMER
    from tests.events.factories import ClinicWebhookEndpointFactory

    settings.EVENT_CONSUMERS = {"prescription.received": [HARMLESS, CLINIC_WEBHOOK_CONSUMER]}
    (without,) = prescriptions_created(1)
    (with_endpoint,) = prescriptions_created(1)
    ClinicWebhookEndpointFactory(clinic=with_endpoint.clinic)
    silent = Event.objects.get(aggregate_id=without.pk)
    listened = Event.objects.get(aggregate_id=with_endpoint.pk)

    assert outbox_relay() == 2

    assert sorted(broker.published) == sorted(
        [(HARMLESS, [silent.pk]), (HARMLESS, [listened.pk]), (CLINIC_WEBHOOK_CONSUMER, [listened.pk])]
    )
    handled = set(ProcessedEvent.objects.values_list("consumer", "event_id"))
    assert handled == {(CLINIC_WEBHOOK_CONSUMER, silent.pk)}


def test_only_an_original_with_repeats_costs_the_repeat_consumer_a_task(broker, settings):
    from events.models import ProcessedEvent
    from saga.journey import REPEATS

    settings.EVENT_CONSUMERS = {"prescription.received": [REPEATS]}
    clinic = ClinicFactory()
    prescriber = PrescriberFactory(clinic=clinic)
    patient = PatientFactory(clinic=clinic)
    item = one_a_day(MedicationFactory())
    once = services.prescription_create(clinic=clinic, patient=patient, prescriber=prescriber, items=[item])
    repeating = services.prescription_create(
        clinic=clinic, patient=patient, prescriber=prescriber, items=[item], repeats=2
    )

    outbox_relay()

    repeating_event = Event.objects.get(aggregate_id=repeating.pk)
    once_event = Event.objects.get(aggregate_id=once.pk)
    assert broker.published == [(REPEATS, [repeating_event.pk])]
    assert set(ProcessedEvent.objects.values_list("consumer", "event_id")) == {(REPEATS, once_event.pk)}


def test_only_a_patient_with_an_email_or_a_phone_costs_the_notification_consumer_a_task(broker, settings):
    from events.models import ProcessedEvent
    from saga.journey import NOTIFY

    settings.EVENT_CONSUMERS = {"prescription.received": [NOTIFY]}
    clinic = ClinicFactory()
    prescriber = PrescriberFactory(clinic=clinic)
    item = one_a_day(MedicationFactory())
    created = {
        contact: services.prescription_create(
            clinic=clinic,
            patient=PatientFactory(clinic=clinic, email=email, phone=phone),
            prescriber=prescriber,
            items=[item],
        )
        for contact, email, phone in (
            ("none", "", ""),
            ("email", "pat@example.org", ""),
            ("phone", "", "+447700900123"),
        )
    }

    outbox_relay()

    event = {contact: Event.objects.get(aggregate_id=made.pk).pk for contact, made in created.items()}
    assert sorted(broker.published) == sorted([(NOTIFY, [event["email"]]), (NOTIFY, [event["phone"]])])
    assert set(ProcessedEvent.objects.values_list("consumer", "event_id")) == {(NOTIFY, event["none"])}


def test_after_commit_the_publish_is_the_broker_send_alone_the_event_statement_marked_the_row_and_idle_consumers(
    broker, settings, django_capture_on_commit_callbacks
):
    from django.test.utils import CaptureQueriesContext

    from events.models import ProcessedEvent
    from saga.journey import CLINIC_WEBHOOK

    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    settings.EVENT_CONSUMERS = {"prescription.received": [HARMLESS, CLINIC_WEBHOOK]}
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        (prescription,) = prescriptions_created(1)
    event = Event.objects.get(aggregate_id=prescription.pk)
    # Written with the event, before the commit: the row published, the idle consumer handled.
    assert unpublished() == 0
    assert OutboxMessage.objects.get(event=event).attempts == 1
    assert list(ProcessedEvent.objects.values_list("consumer", "event_id")) == [(CLINIC_WEBHOOK, event.pk)]
    assert broker.published == []

    with CaptureQueriesContext(connection) as publish:
        for callback in callbacks:
            callback()

    assert len(publish) == 0
    assert broker.published == [(HARMLESS, [event.pk])]
    assert outbox_relay() == 0


def test_the_event_statement_finds_idle_consumers_as_the_relay_does(broker, settings):
    """Each idle condition (saga.journey.CONSUMER_IDLE_WHEN), evaluated in the event's own
    statement, holds exactly where the relay's publication finds it holds."""
    from events.models import ProcessedEvent
    from saga.journey import CLINIC_WEBHOOK, NOTIFY, REPEATS
    from tests.events.factories import ClinicWebhookEndpointFactory

    consumers = [HARMLESS, CLINIC_WEBHOOK, NOTIFY, REPEATS]
    settings.EVENT_CONSUMERS = {"prescription.received": consumers}
    listening = ClinicFactory()
    ClinicWebhookEndpointFactory(clinic=listening)
    cases = [
        # (clinic, email, repeats)
        (ClinicFactory(), "", 0),
        (listening, "pat@example.org", 0),
        (listening, "", 2),
        (ClinicFactory(), "pat@example.org", 2),
    ]

    def create_all() -> list[int]:
        ids = []
        for clinic, email, repeats in cases:
            prescription = services.prescription_create(
                clinic=clinic,
                patient=PatientFactory(clinic=clinic, email=email, phone=""),
                prescriber=PrescriberFactory(clinic=clinic),
                items=[one_a_day(MedicationFactory())],
                repeats=repeats,
            )
            ids.append(Event.objects.get(aggregate_id=prescription.pk).pk)
        return ids

    def handled(ids: list[int]) -> list[set[str]]:
        rows = set(ProcessedEvent.objects.filter(event_id__in=ids).values_list("consumer", "event_id"))
        return [{consumer for consumer, event_id in rows if event_id == one} for one in ids]

    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    by_relay = create_all()
    outbox_relay()
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    in_statement = create_all()

    assert handled(in_statement) == handled(by_relay)
    assert handled(in_statement) == [
        {CLINIC_WEBHOOK, NOTIFY, REPEATS},
        {REPEATS},
        {NOTIFY},
        {CLINIC_WEBHOOK},
    ]
