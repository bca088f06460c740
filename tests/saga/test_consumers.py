"""Consumers run their effect once per event, however often the relay or broker delivers it."""

from __future__ import annotations

import pytest
from django.utils import timezone

from billing import services as billing_services
from billing.payments import PaymentUnavailable
from billing.services import payments
from config.celery import app as celery_app
from events.models import Event, OutboxTask, ProcessedEvent
from events.services import consume_once
from pharmacy.models import Dispatch
from pharmacy.services import DISPATCH_SEND_TASK
from prescriptions.models import Prescription, Status
from saga import tasks as saga_tasks
from tests.events.test_outbox import prescriptions_created
from tests.outbox import owed_tasks
from tests.pharmacy.factories import approved_prescription

pytestmark = pytest.mark.django_db


def received_event(prescription: Prescription) -> Event:
    return Event.objects.get(aggregate_id=prescription.pk, type="prescription.received")


def test_the_check_consumer_delivered_twice_runs_the_checks_once(formulary):
    # Given a received prescription whose event reaches the checks consumer twice
    (prescription,) = prescriptions_created(1)
    event = received_event(prescription)

    # When the task runs twice (a republished outbox row)
    saga_tasks.prescription_check(event.pk)
    saga_tasks.prescription_check(event.pk)

    # Then one status event follows the received one, and the consumer's record is single
    types = list(Event.objects.filter(aggregate_id=prescription.pk).values_list("type", flat=True))
    assert len(types) == 2
    assert types[0] == "prescription.received"
    assert ProcessedEvent.objects.filter(consumer="prescriptions.tasks.prescription_check").count() == 1


def test_the_dispatch_consumer_delivered_twice_creates_one_dispatch_and_one_send(clinic_a, paracetamol):
    prescription = approved_prescription(clinic_a, paracetamol)
    paid = Event.objects.get(aggregate_id=prescription.pk, type="prescription.paid")

    saga_tasks.dispatch_on_approved(paid.pk)
    saga_tasks.dispatch_on_approved(paid.pk)

    dispatch = Dispatch.objects.get(prescription=prescription)
    assert owed_tasks() == [(DISPATCH_SEND_TASK, [dispatch.pk])]
    assert ProcessedEvent.objects.filter(consumer="pharmacy.tasks.dispatch_on_approved").count() == 1


def test_an_effect_that_fails_leaves_no_record_so_the_next_delivery_runs_it():
    (prescription,) = prescriptions_created(1)
    event = received_event(prescription)
    calls: list[int] = []

    def failing(event: Event) -> None:
        calls.append(event.pk)
        raise RuntimeError("transient")

    with pytest.raises(RuntimeError):
        consume_once(consumer="test.consumer", event_id=event.pk, handle=failing)
    assert ProcessedEvent.objects.filter(consumer="test.consumer").count() == 0

    assert (
        consume_once(consumer="test.consumer", event_id=event.pk, handle=lambda e: calls.append(e.pk)) is True
    )
    assert (
        consume_once(consumer="test.consumer", event_id=event.pk, handle=lambda e: calls.append(e.pk))
        is False
    )
    assert calls == [event.pk, event.pk]


def test_a_network_consumer_records_the_event_only_after_its_effect_succeeded():
    (prescription,) = prescriptions_created(1)
    event = received_event(prescription)
    seen: list[int] = []

    def effect(event: Event) -> None:
        # Not atomic: the record must not exist while the (network) effect runs.
        seen.append(ProcessedEvent.objects.filter(consumer="test.network").count())

    assert consume_once(consumer="test.network", event_id=event.pk, handle=effect, atomic=False) is True
    assert consume_once(consumer="test.network", event_id=event.pk, handle=effect, atomic=False) is False
    assert seen == [0]
    assert ProcessedEvent.objects.filter(consumer="test.network", event=event).count() == 1


def statements(captured: object) -> int:
    queries = captured.captured_queries  # type: ignore[attr-defined]
    return sum(1 for query in queries if not query["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT")))


def test_a_claim_reads_the_event_in_the_statement_that_records_it():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    (prescription,) = prescriptions_created(1)
    event = received_event(prescription)
    seen: list[Event] = []

    with CaptureQueriesContext(connection) as claim:
        assert consume_once(consumer="test.consumer", event_id=event.pk, handle=seen.append) is True
    with CaptureQueriesContext(connection) as repeat:
        assert consume_once(consumer="test.consumer", event_id=event.pk, handle=seen.append) is False

    # The handler gets the event as the ORM reads it; one statement claims, one finds it claimed.
    assert [(found.pk, found.type, found.payload, found.aggregate_id) for found in seen] == [
        (event.pk, event.type, event.payload, event.aggregate_id)
    ]
    # (The test's own transaction adds a savepoint around each; a worker's is the outermost.)
    assert (statements(claim), statements(repeat)) == (1, 1)


def test_a_network_consumer_costs_one_read_before_and_one_record_after_its_effect():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    (prescription,) = prescriptions_created(1)
    event = received_event(prescription)

    with CaptureQueriesContext(connection) as first:
        assert consume_once(consumer="test.network", event_id=event.pk, handle=lambda e: None, atomic=False)
    with CaptureQueriesContext(connection) as repeat:
        assert not consume_once(
            consumer="test.network", event_id=event.pk, handle=lambda e: 1 / 0, atomic=False
        )

    assert (len(first), len(repeat)) == (2, 1)


def test_a_missing_event_is_a_quiet_no_op():
    assert consume_once(consumer="test.consumer", event_id=987654321, handle=lambda e: 1 / 0) is False
    assert (
        consume_once(consumer="test.network", event_id=987654321, handle=lambda e: 1 / 0, atomic=False)
        is False
    )
    assert ProcessedEvent.objects.count() == 0


def test_the_billing_consumer_delivered_twice_calls_billing_once(monkeypatch):
    # Billing calls Stripe, so it runs outside a transaction; the record still stops a repeat.
    (prescription,) = prescriptions_created(1)
    calls: list[int] = []
    monkeypatch.setattr(
        billing_services, "prescription_bill", lambda *, prescription_id: calls.append(prescription_id)
    )
    event = received_event(prescription)

    saga_tasks.billing_on_approved(event.pk)
    saga_tasks.billing_on_approved(event.pk)

    assert calls == [prescription.pk]
    assert ProcessedEvent.objects.filter(consumer="billing.tasks.billing_on_approved").count() == 1


@pytest.mark.parametrize(
    ("task", "service", "attribute"),
    [
        (saga_tasks.billing_on_approved, billing_services, "prescription_bill"),
        (saga_tasks.payment_compensate, payments, "payment_compensate"),
    ],
)
def test_stripe_being_down_owes_the_consumer_as_a_due_row_and_publishes_nothing_itself(
    monkeypatch, task, service, attribute
):
    # Invariant: no enqueue outside the relay. A Stripe outage leaves an OutboxTask row due
    # later (which the relay publishes), not a countdown retry held by the broker.
    (prescription,) = prescriptions_created(1)
    event = received_event(prescription)
    outcomes: list[str] = []

    def flaky(*, prescription_id: int) -> None:
        if not outcomes:
            outcomes.append("down")
            raise PaymentUnavailable("Stripe unavailable (503)")
        outcomes.append("ran")

    monkeypatch.setattr(service, attribute, flaky)
    sent: list[object] = []
    monkeypatch.setattr(celery_app, "send_task", lambda *args, **kwargs: sent.append(args))

    task(event.pk)

    row = OutboxTask.objects.get(task=task.name, args=[event.pk])
    assert row.retries == 1
    assert row.due_at > timezone.now()
    assert "503" in row.last_error
    assert not ProcessedEvent.objects.filter(consumer=task.name, event_id=event.pk).exists()
    assert sent == []

    task(event.pk)  # the relay publishes the row when it is due

    assert outcomes == ["down", "ran"]
    assert not OutboxTask.objects.filter(task=task.name).exists()
    assert ProcessedEvent.objects.filter(consumer=task.name, event_id=event.pk).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_dispatch_consumer_sends_the_dispatch_it_created_without_a_second_task(
    gateway, clinic_a, paracetamol, monkeypatch
):
    # Given a paid prescription whose event reaches the dispatch consumer (the gateway simulator
    # a real process, the broker recording what is published)
    prescription = approved_prescription(clinic_a, paracetamol)
    paid = Event.objects.get(aggregate_id=prescription.pk, type="prescription.paid")
    published: list[str] = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, *args, **options: published.append(name))

    # When the consumer runs (its transaction commits for real)
    saga_tasks.dispatch_on_approved(paid.pk)

    # Then the dispatch was created and sent in that one task: the order is at the gateway, the
    # send's outbox row settled, and no send was published to the broker
    dispatch = Dispatch.objects.get(prescription=prescription)
    assert dispatch.status == Dispatch.Status.ACKNOWLEDGED
    assert gateway.stats()["orders"] == 1
    assert owed_tasks() == []
    assert DISPATCH_SEND_TASK not in published


@pytest.mark.django_db(transaction=True)
def test_a_dispatch_consumer_that_dies_during_the_send_leaves_it_owed_to_the_relay_after_a_lease(
    clinic_a, paracetamol, monkeypatch, settings
):
    from datetime import timedelta

    from events.services import outbox_tasks_publish
    from pharmacy import services as pharmacy_services

    prescription = approved_prescription(clinic_a, paracetamol)
    paid = Event.objects.get(aggregate_id=prescription.pk, type="prescription.paid")
    published: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(
        celery_app, "send_task", lambda name, args=None, **options: published.append((name, list(args or [])))
    )

    def killed(**kwargs: object) -> str:
        raise SystemExit("worker killed mid-send")

    monkeypatch.setattr(pharmacy_services, "dispatch_send", killed)
    with pytest.raises(SystemExit):
        saga_tasks.dispatch_on_approved(paid.pk)

    # The dispatch committed and its send is owed, claimed for one lease: the relay leaves it...
    dispatch = Dispatch.objects.get(prescription=prescription)
    row = OutboxTask.objects.get(task=DISPATCH_SEND_TASK)
    assert row.args == [dispatch.pk]
    assert row.due_at > timezone.now() + timedelta(seconds=settings.OUTBOX_TASK_LEASE_SECONDS - 5)
    assert outbox_tasks_publish() == 0
    # ...until the lease ends, then publishes it
    OutboxTask.objects.filter(pk=row.pk).update(due_at=timezone.now())
    assert outbox_tasks_publish() == 1
    assert published == [(DISPATCH_SEND_TASK, [dispatch.pk])]


@pytest.mark.django_db(transaction=True)
def test_a_second_delivery_of_the_paid_event_runs_the_send_its_first_run_still_owes(
    gateway, clinic_a, paracetamol, monkeypatch
):
    from pharmacy import services as pharmacy_services

    prescription = approved_prescription(clinic_a, paracetamol)
    paid = Event.objects.get(aggregate_id=prescription.pk, type="prescription.paid")
    monkeypatch.setattr(celery_app, "send_task", lambda name, *args, **options: None)
    real_send = pharmacy_services.dispatch_send

    def killed(**kwargs: object) -> str:
        raise SystemExit("worker killed mid-send")

    monkeypatch.setattr(pharmacy_services, "dispatch_send", killed)
    with pytest.raises(SystemExit):
        saga_tasks.dispatch_on_approved(paid.pk)
    monkeypatch.setattr(pharmacy_services, "dispatch_send", real_send)

    # The broker delivers the event again (its first consumer died unacknowledged): the dispatch
    # exists already, and the send still owed runs in this delivery, not one lease later
    saga_tasks.dispatch_on_approved(paid.pk)

    assert Dispatch.objects.get(prescription=prescription).status == Dispatch.Status.ACKNOWLEDGED
    assert gateway.stats()["orders"] == 1
    assert owed_tasks() == []
    # A third delivery finds nothing owed and sends nothing
    saga_tasks.dispatch_on_approved(paid.pk)
    assert gateway.stats()["requests"] == 1


@pytest.mark.django_db(transaction=True)
def test_checks_that_approve_take_the_payment_in_the_same_task_without_a_broker_message(
    formulary, stripe_sim, monkeypatch, settings
):
    from billing.models import Payment
    from saga import journey

    # Given a received prescription the checks approve outright (the Stripe simulator a real
    # process, the broker recording what is published, publishing after commit as a worker does)
    (prescription,) = prescriptions_created(1)
    published: list[str] = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, *args, **options: published.append(name))
    settings.OUTBOX_PUBLISH_ON_COMMIT = True

    # When the checks task runs (its transaction commits for real)
    saga_tasks.prescription_check(received_event(prescription).pk)

    # Then the approval's billing ran in that task: the payment intent exists at Stripe and the
    # prescription awaits its payment, with no billing message through the broker
    approved = Event.objects.get(aggregate_id=prescription.pk, type="prescription.approved")
    prescription.refresh_from_db()
    assert prescription.status == Status.AWAITING_PAYMENT
    assert Payment.objects.get(prescription=prescription).stripe_payment_intent_id.startswith("pi_")
    assert ProcessedEvent.objects.filter(consumer=journey.BILL, event=approved).count() == 1
    assert journey.BILL not in published
    # A later delivery of the approval to billing (the lease pass racing) changes nothing
    saga_tasks.billing_on_approved(approved.pk)
    assert Payment.objects.filter(prescription=prescription).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_checks_task_that_dies_before_billing_leaves_the_approval_to_the_lease_pass(
    formulary, monkeypatch, settings
):
    from datetime import timedelta

    from events.models import OutboxMessage
    from events.services import outbox_events_lease_expired_republish
    from saga import journey

    (prescription,) = prescriptions_created(1)
    published: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(
        celery_app, "send_task", lambda name, args=None, **options: published.append((name, list(args or [])))
    )
    settings.OUTBOX_PUBLISH_ON_COMMIT = True

    def killed(*, prescription_id: int) -> None:
        raise SystemExit("worker killed before billing")

    monkeypatch.setattr(billing_services, "prescription_bill", killed)
    with pytest.raises(SystemExit):
        saga_tasks.prescription_check(received_event(prescription).pk)

    # The approval committed, published with billing kept for this process, which died: nothing
    # went to the broker and billing has not run...
    approved = Event.objects.get(aggregate_id=prescription.pk, type="prescription.approved")
    assert OutboxMessage.objects.get(event=approved).published_at is not None
    assert not ProcessedEvent.objects.filter(consumer=journey.BILL, event=approved).exists()
    assert published == []
    # ...until the lease ends: then the lease pass publishes the approval to billing
    assert outbox_events_lease_expired_republish() == 0
    OutboxMessage.objects.filter(event=approved).update(
        published_at=timezone.now() - timedelta(seconds=settings.OUTBOX_TASK_LEASE_SECONDS + 1)
    )
    assert outbox_events_lease_expired_republish() == 1
    assert published == [(journey.BILL, [approved.pk])]


@pytest.mark.django_db(transaction=True)
def test_billing_that_fails_in_the_checks_task_is_logged_and_the_checks_outcome_stands(
    formulary, monkeypatch, caplog, settings
):
    from saga import journey

    (prescription,) = prescriptions_created(1)
    monkeypatch.setattr(celery_app, "send_task", lambda name, *args, **options: None)
    settings.OUTBOX_PUBLISH_ON_COMMIT = True

    def broken(*, prescription_id: int) -> None:
        raise RuntimeError("billing bug")

    monkeypatch.setattr(billing_services, "prescription_bill", broken)
    with caplog.at_level("ERROR", logger="events.services"):
        saga_tasks.prescription_check(received_event(prescription).pk)  # does not raise

    prescription.refresh_from_db()
    approved = Event.objects.get(aggregate_id=prescription.pk, type="prescription.approved")
    assert prescription.status == Status.APPROVED
    assert not ProcessedEvent.objects.filter(consumer=journey.BILL, event=approved).exists()
    assert [record.args for record in caplog.records if "lease pass" in record.getMessage()] == [
        (journey.BILL, approved.pk)
    ]
