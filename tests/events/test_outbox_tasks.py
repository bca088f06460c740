"""Owed tasks (events.OutboxTask): work written with its row, published when due, published
again when a lease runs out, retried by due time; never a countdown held by a worker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.services.payments import REFUND_SEND_TASK
from config.celery import app
from events import services, webhooks
from events.models import OutboxTask
from notifications.services import DELIVER_TASK as NOTIFICATION_DELIVER_TASK
from pharmacy.services import CANCELLATION_SEND_TASK, DISPATCH_SEND_TASK
from tests.events.test_outbox import Broker

pytestmark = pytest.mark.django_db

TASK = "tests.events.owed"


@pytest.fixture
def broker(monkeypatch) -> Broker:  # type: ignore[no-untyped-def]
    fake = Broker()
    monkeypatch.setattr(app, "send_task", fake.send_task)
    return fake


def test_owing_the_same_work_twice_is_one_row_due_at_the_earlier_time():
    with transaction.atomic():
        services.outbox_task_enqueue(task=TASK, args=[7], delay_seconds=600)
        services.outbox_task_enqueue(task=TASK, args=[7])
        services.outbox_task_enqueue(task=TASK, args=[8], delay_seconds=600)

    rows = {row.args[0]: row for row in OutboxTask.objects.all()}
    assert sorted(rows) == [7, 8]
    assert rows[7].due_at <= timezone.now() < rows[8].due_at


def test_owing_is_one_statement_that_brings_a_due_time_forward_but_never_pushes_it_back():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as owed:
        assert services.outbox_task_enqueue(task=TASK, args=[7], delay_seconds=60) is True
    first = OutboxTask.objects.get().due_at

    assert services.outbox_task_enqueue(task=TASK, args=[7], delay_seconds=600) is False
    assert OutboxTask.objects.get().due_at == first
    assert services.outbox_task_enqueue(task=TASK, args=[7]) is False
    assert OutboxTask.objects.get().due_at < first
    assert len(owed) == 1


def test_work_owed_in_a_transaction_that_rolls_back_is_not_owed():
    def owe_then_fail() -> None:
        with transaction.atomic():
            services.outbox_task_enqueue(task=TASK, args=[1])
            raise RuntimeError("the row it works on was never written")

    with pytest.raises(RuntimeError):
        owe_then_fail()

    assert not OutboxTask.objects.exists()


def test_the_relay_publishes_due_work_once_per_lease_and_again_when_the_lease_ends(broker):
    services.outbox_task_enqueue(task=TASK, args=[1])
    services.outbox_task_enqueue(task=TASK, args=[2], delay_seconds=600)

    assert services.outbox_tasks_publish() == 1
    assert services.outbox_tasks_publish() == 0  # leased: a running task is not sent twice
    assert broker.published == [(TASK, [1])]
    row = OutboxTask.objects.get(args=[1])
    lease = row.due_at - timezone.now()
    assert timedelta(seconds=settings.OUTBOX_TASK_LEASE_SECONDS - 5) < lease
    assert row.publications == 1

    # The worker running it was killed: nothing finished it, so the lease runs out.
    OutboxTask.objects.filter(pk=row.pk).update(due_at=timezone.now())
    assert services.outbox_tasks_publish() == 1
    assert broker.published == [(TASK, [1]), (TASK, [1])]
    assert OutboxTask.objects.get(pk=row.pk).publications == 2


def test_the_beat_relay_publishes_events_and_owed_work(broker, settings):
    settings.EVENT_CONSUMERS = {}
    services.outbox_task_enqueue(task=TASK, args=[3])

    assert services.outbox_relay_all() == 1
    assert broker.published == [(TASK, [3])]


def test_finished_work_is_no_longer_owed():
    services.outbox_task_enqueue(task=TASK, args=[1])

    outcome = services.outbox_task_run(
        task=TASK, args=[1], run=lambda: None, retry_on=(ConnectionError,), backoff=lambda retries: 1
    )

    assert outcome == "done"
    assert not OutboxTask.objects.exists()


def test_a_transient_failure_is_retried_by_due_time_with_growing_backoff():
    services.outbox_task_enqueue(task=TASK, args=[1])
    backoffs: list[int] = []

    def backoff(retries: int) -> float:
        backoffs.append(retries)
        return 120

    def failing() -> None:
        raise ConnectionError("partner unreachable")

    outcomes = [
        services.outbox_task_run(
            task=TASK, args=[1], run=failing, retry_on=(ConnectionError,), backoff=backoff
        )
        for _ in range(2)
    ]

    row = OutboxTask.objects.get()
    assert outcomes == ["retry", "retry"]
    assert backoffs == [0, 1]
    assert (row.retries, row.last_error) == (2, "partner unreachable")
    assert timedelta(seconds=110) < row.due_at - timezone.now() <= timedelta(seconds=120)


def test_retry_later_sets_the_due_time_it_names():
    services.outbox_task_enqueue(task=TASK, args=[1])

    def held_back() -> None:
        raise services.RetryLater(300, "circuit open")

    outcome = services.outbox_task_run(
        task=TASK, args=[1], run=held_back, retry_on=(ConnectionError,), backoff=lambda retries: 1
    )

    row = OutboxTask.objects.get()
    assert outcome == "later"
    assert row.last_error == "circuit open"
    assert timedelta(seconds=290) < row.due_at - timezone.now() <= timedelta(seconds=300)


def test_an_unexpected_error_leaves_the_work_owed_for_the_next_lease():
    services.outbox_task_enqueue(task=TASK, args=[1])

    def broken() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        services.outbox_task_run(
            task=TASK, args=[1], run=broken, retry_on=(ConnectionError,), backoff=lambda r: 1
        )

    assert OutboxTask.objects.count() == 1


@pytest.mark.parametrize(
    "task",
    [
        DISPATCH_SEND_TASK,
        CANCELLATION_SEND_TASK,
        REFUND_SEND_TASK,
        webhooks.DELIVER_TASK,
        NOTIFICATION_DELIVER_TASK,
    ],
)
def test_every_owed_task_finishes_within_its_lease(task):
    # A healthy run must end (delete or reschedule its row) before the lease ends, or the
    # relay would publish it a second time while it runs.
    app.loader.import_default_modules()
    registered = app.tasks[task]

    assert registered.time_limit is not None
    assert registered.soft_time_limit < registered.time_limit < settings.OUTBOX_TASK_LEASE_SECONDS
