"""A flaky or absent gateway, and a relay that dies between publishing and marking.

Invariants 2 and 7, counted at the gateway simulator and in ProcessedEvent. Two relays
running at once is covered in-process in tests/events/test_outbox.py
(test_two_relays_running_at_once_each_publish_rows_and_together_every_row_exactly_once).
"""

from __future__ import annotations

import time

import pytest
from django.db.models import QuerySet

from config.celery import app
from events import services as events
from events.models import Event, OutboxMessage, ProcessedEvent
from pharmacy.models import DeadLetter, Dispatch
from pharmacy.services import dead_letter_replay
from prescriptions.models import Prescription, Status
from tests.faults.pipeline import (
    acknowledged_count,
    assert_one_order_per_prescription,
    nhs_funded_prescriptions,
    wait_with_reconciler,
)
from tests.processes import queued_messages, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("core_consumers_only")]

QUICK_RETRIES = {
    "GATEWAY_TIMEOUT_SECONDS": "1",
    "GATEWAY_RETRY_BACKOFF_SECONDS": "0.2",
    "GATEWAY_RETRY_BACKOFF_MAX_SECONDS": "1",
    "GATEWAY_CIRCUIT_OPEN_SECONDS": "1",
    "GATEWAY_CIRCUIT_OPEN_MAX_SECONDS": "2",
}


def test_a_gateway_failing_with_5xx_and_timeouts_still_gets_every_order_once(
    clinic_a, paracetamol_loaded, gateway, workers
):
    # Invariant: 30 % 5xx and 10 % timeouts delay dispatch but every prescription ends
    # acknowledged with exactly one order (the retries reuse the idempotency key).
    count = 30
    ids = nhs_funded_prescriptions(clinic_a, paracetamol_loaded, count)
    gateway.control(error_rate=0.3, timeout_rate=0.1, hang=2)
    workers(**QUICK_RETRIES, GATEWAY_MAX_ATTEMPTS="30")
    events.outbox_relay()

    wait_with_reconciler(lambda: acknowledged_count(ids) == count, seconds=90, what="all acknowledged")

    stats = gateway.stats()
    assert stats["errors"] + stats["timeouts"] > 0  # the faults really happened
    assert_one_order_per_prescription(gateway, ids)
    assert DeadLetter.objects.count() == 0


def test_a_gateway_down_for_the_whole_retry_window_dead_letters_all_then_replay_orders_each_once(
    clinic_a, paracetamol_loaded, gateway, workers
):
    # Invariant: with the gateway down and an attempt cap set (GATEWAY_MAX_ATTEMPTS; by default
    # the 24-hour window decides) every dispatch is dead-lettered after its attempts
    # (no order anywhere); replayed through the admin's service once it is back, each
    # makes exactly one order, and replaying again changes nothing.
    count = 10
    ids = nhs_funded_prescriptions(clinic_a, paracetamol_loaded, count)
    gateway.control(down=True)
    workers(**QUICK_RETRIES, GATEWAY_MAX_ATTEMPTS="3", GATEWAY_CIRCUIT_FAILURES="1000")
    events.outbox_relay()

    wait_with_reconciler(
        lambda: Prescription.objects.filter(pk__in=ids, status=Status.DEAD_LETTERED).count() == count,
        seconds=60,
        what="all dead-lettered",
    )
    assert gateway.stats()["orders"] == 0
    assert (
        list(Dispatch.objects.filter(prescription_id__in=ids).values_list("attempts", flat=True))
        == [3] * count
    )
    letters = list(DeadLetter.objects.filter(dispatch__prescription_id__in=ids).values_list("pk", flat=True))
    assert len(letters) == count

    gateway.control(down=False)
    assert [dead_letter_replay(dead_letter_id=pk, actor="operator") for pk in letters] == [True] * count
    assert [dead_letter_replay(dead_letter_id=pk, actor="operator") for pk in letters] == [False] * count

    wait_with_reconciler(
        lambda: acknowledged_count(ids) == count, seconds=60, what="all acknowledged after replay"
    )
    assert_one_order_per_prescription(gateway, ids)


def test_a_relay_that_dies_after_publishing_but_before_marking_causes_no_second_effect(
    clinic_a, paracetamol_loaded, gateway, workers, monkeypatch
):
    # Invariant: the relay publishes, then fails to mark the rows sent (a crash), so the next
    # pass publishes the same events again; each consumer's effect still happens once.
    count = 5
    ids = nhs_funded_prescriptions(clinic_a, paracetamol_loaded, count)
    published: list[tuple[str, int]] = []
    real_send_task = app.send_task

    def counting_send_task(name, args=None, **options):  # type: ignore[no-untyped-def]
        published.append((name, args[0]))
        return real_send_task(name, args=args, **options)

    monkeypatch.setattr(app, "send_task", counting_send_task)
    real_mark = events._outbox_mark_published
    failures = iter([RuntimeError("relay killed before marking")])

    def mark_failing_once(messages: QuerySet[OutboxMessage]) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        real_mark(messages)

    monkeypatch.setattr(events, "_outbox_mark_published", mark_failing_once)
    workers()

    with pytest.raises(RuntimeError, match="relay killed"):
        events.outbox_relay()
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == count
    assert events.outbox_relay() == count

    funded = list(
        Event.objects.filter(aggregate_id__in=ids, type="prescription.nhs_funded").values_list(
            "pk", flat=True
        )
    )
    assert sorted(published) == sorted([("pharmacy.tasks.dispatch_on_approved", pk) for pk in funded] * 2)
    wait_until(lambda: acknowledged_count(ids) == count, seconds=60, what="all acknowledged")
    wait_until(lambda: queued_messages("dispatch") == 0, seconds=20, what="the second deliveries consumed")
    time.sleep(1)
    assert ProcessedEvent.objects.filter(event__in=funded).count() == count
    assert Dispatch.objects.filter(prescription_id__in=ids).count() == count
    assert_one_order_per_prescription(gateway, ids)
