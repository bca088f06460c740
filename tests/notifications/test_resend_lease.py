"""A staff resend whose run dies with its worker (claimed, never sent) is sent by the run the relay
publishes when the owed task's lease ends; while a live run holds the claim, nothing is sent
twice and the work stays owed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from config.celery import app
from events.models import OutboxTask
from events.services import outbox_tasks_publish
from notifications import services as notifications
from notifications.models import Notification
from notifications.tasks import notification_deliver
from tests.events.test_outbox import Broker
from tests.outbox import owed_tasks
from tests.support.factories import shipped_prescription

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker(monkeypatch) -> Broker:  # type: ignore[no-untyped-def]
    fake = Broker()
    monkeypatch.setattr(app, "send_task", fake.send_task)
    return fake


@pytest.fixture
def resend(formulary, settings) -> Notification:  # type: ignore[no-untyped-def]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.OUTBOX_TASK_LEASE_SECONDS = 45
    shipped_prescription(patient={"email": "sam@example.invalid", "phone": ""})
    original = Notification.objects.get()
    return notifications.notification_resend(notification_id=original.pk, actor="user:1")


def claimed_by_a_run_that_died(resend: Notification, *, seconds_ago: float) -> None:
    """What a run killed mid-send leaves: the claim, and the owed row it never deleted, last
    published when the run was handed the task."""
    at = timezone.now() - timedelta(seconds=seconds_ago)
    Notification.objects.filter(pk=resend.pk).update(status=Notification.Status.SENDING, claimed_at=at)


def test_a_resend_claimed_by_a_worker_that_died_is_published_again_and_sent_once(resend, broker, mailoutbox):
    # Given the relay published the resend, and the run it reached claimed it and died
    assert outbox_tasks_publish() == 1
    assert broker.published == [(notifications.DELIVER_TASK, [resend.pk])]
    claimed_by_a_run_that_died(resend, seconds_ago=0)

    # When the lease has not run out, the relay publishes nothing more
    assert outbox_tasks_publish() == 0

    # When it has (the claim and the publication are a lease old)
    claimed_by_a_run_that_died(resend, seconds_ago=46)
    OutboxTask.objects.update(due_at=timezone.now() - timedelta(seconds=1))
    assert outbox_tasks_publish() == 1
    assert broker.published[-1] == (notifications.DELIVER_TASK, [resend.pk])
    notification_deliver.run(resend.pk)

    # Then the resend is sent once, and nothing more is owed
    assert [message.to for message in mailoutbox] == [["sam@example.invalid"]]
    assert Notification.objects.get(pk=resend.pk).status == Notification.Status.SENT
    assert owed_tasks(notifications.DELIVER_TASK) == []
    notification_deliver.run(resend.pk)
    assert len(mailoutbox) == 1


def test_a_second_run_while_a_live_run_holds_the_claim_sends_nothing_and_keeps_the_work_owed(
    resend, broker, mailoutbox
):
    claimed_by_a_run_that_died(resend, seconds_ago=5)  # or still running: 5 s is within the lease

    notification_deliver.run(resend.pk)

    assert mailoutbox == []
    row = OutboxTask.objects.get()
    assert (row.task, row.args) == (notifications.DELIVER_TASK, [resend.pk])
    # Due when the claim's lease ends (45 s after the claim, so about 40 s from now)
    assert timedelta(seconds=35) < row.due_at - timezone.now() < timedelta(seconds=45)
    assert Notification.objects.get(pk=resend.pk).status == Notification.Status.SENDING


def test_an_original_notification_claimed_and_never_sent_is_not_taken_over(resend, mailoutbox):
    # Originals are sent at most once per event and channel; only staff resends are leased
    original = Notification.objects.get(resend_of__isnull=True)
    Notification.objects.filter(pk=original.pk).update(
        status=Notification.Status.SENDING, claimed_at=timezone.now() - timedelta(hours=1)
    )

    assert notifications.notification_deliver(notification_id=original.pk) == "not-queued"
    assert mailoutbox == []
