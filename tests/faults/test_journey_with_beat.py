"""The whole journey to `delivered` with beat started for real (the relay, the reconciler and the
order poll as `make demo` runs them) and the gateway walking each order by signed webhooks:
a worker killed between the gateway's answer and our commit, a gateway restarted that then
loses every webhook, and a gateway down for longer than the old retry span.

Each asserts every prescription delivered, one gateway order each, nothing dead-lettered and
no operator alert. The recovery time after the killed worker is written to
var/log/faults/recovery.txt."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from django.conf import settings

from events.services import outbox_relay_all
from pharmacy.models import DeadLetter, OrderAlert, PartnerCircuit
from prescriptions.models import Prescription, Status
from tests.faults.conftest import LOG_DIR
from tests.faults.pipeline import assert_one_order_per_prescription, nhs_funded_prescriptions
from tests.processes import Simulator, purge_queues, start_simulator, stop_process, wait_until

pytestmark = pytest.mark.faults


@pytest.fixture
def gateway(live_server) -> Iterator[Simulator]:  # type: ignore[no-untyped-def]
    """The gateway simulator walking orders on by webhooks to this test's server."""
    purge_queues()
    simulator = start_simulator(webhook_url=f"{live_server.url}/webhooks/gateway/", step_delay=0.5)
    try:
        yield simulator
    finally:
        simulator.stop()


def delivered_count(ids: list[int]) -> int:
    return Prescription.objects.filter(pk__in=ids, status=Status.DELIVERED).count()


def assert_delivered_once_each(gateway: Simulator, ids: list[int]) -> None:
    assert delivered_count(ids) == len(ids)
    assert_one_order_per_prescription(gateway, ids)
    assert not DeadLetter.objects.exists()
    assert not OrderAlert.objects.exists()


def test_a_worker_killed_between_the_gateways_answer_and_our_commit_still_delivers_each_once(
    clinic_a, paracetamol_loaded, gateway, workers, beat
):
    # Given orders the gateway has taken but not yet answered (3 s) when the worker dies
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    ids = nhs_funded_prescriptions(clinic_a, paracetamol_loaded, 10)
    gateway.control(answer_delay=3)
    first = workers()
    beat()
    outbox_relay_all()
    wait_until(lambda: gateway.stats()["orders"] >= 2, seconds=60, what="orders taken, answers pending")
    stop_process(first, sig=signal.SIGKILL)
    killed_at = time.monotonic()
    taken_unanswered = gateway.stats()["orders"]

    # When a new worker starts (default lease, relay and reconciler settings)
    gateway.control(answer_delay=0)
    workers()
    wait_until(lambda: delivered_count(ids) == len(ids), seconds=180, what="all delivered")
    recovery = time.monotonic() - killed_at

    # Then every prescription is delivered with one order each
    assert_delivered_once_each(gateway, ids)
    assert taken_unanswered < len(ids)  # the kill landed mid-run
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with (LOG_DIR / "recovery.txt").open("a") as report:
        report.write(
            f"worker killed between answer and commit: all 10 delivered {recovery:.1f}s after the kill\n"
        )
    assert recovery <= 90


def test_a_gateway_restarted_mid_journey_that_loses_every_webhook_is_asked_and_delivers_each_once(
    clinic_a, paracetamol_loaded, gateway, workers, beat
):
    # Given acknowledged orders, and a gateway that is killed, restarted without its pending
    # webhooks, and loses every webhook from then on
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    ids = nhs_funded_prescriptions(clinic_a, paracetamol_loaded, 5)
    gateway.control(step_delay=3)
    workers(ORDER_POLL_AFTER_SECONDS="3", ORDER_POLL_INTERVAL_SECONDS="2")
    beat(ORDER_POLL_BEAT_SECONDS="2")
    outbox_relay_all()
    wait_until(
        lambda: Prescription.objects.filter(pk__in=ids, status=Status.ACKNOWLEDGED).count() == len(ids),
        seconds=60,
        what="all acknowledged",
    )
    gateway.kill()
    gateway.restart("--drop-pending-webhooks")
    gateway.control(drop_next_webhooks=1000, step_delay=0.2)

    # When beat's order poll asks the gateway about the quiet orders
    wait_until(lambda: delivered_count(ids) == len(ids), seconds=120, what="all delivered by polling")

    # Then each is delivered, one order each, and the webhooks really were lost
    assert gateway.stats()["webhooks_dropped"] > 0
    assert_delivered_once_each(gateway, ids)


def test_a_gateway_down_longer_than_the_old_retry_span_delays_work_and_dead_letters_nothing(
    clinic_a, paracetamol_loaded, gateway, workers, beat
):
    # Given a gateway down for 30 s, when 8 attempts (the old budget) span under 14 s here
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    ids = nhs_funded_prescriptions(clinic_a, paracetamol_loaded, 5)
    gateway.control(down=True)
    workers(
        GATEWAY_TIMEOUT_SECONDS="1",
        GATEWAY_RETRY_BACKOFF_SECONDS="0.5",
        GATEWAY_RETRY_BACKOFF_MAX_SECONDS="2",
        GATEWAY_CIRCUIT_OPEN_SECONDS="2",
        GATEWAY_CIRCUIT_OPEN_MAX_SECONDS="4",
    )
    beat()
    outbox_relay_all()
    time.sleep(30)
    assert not DeadLetter.objects.exists()
    assert Prescription.objects.filter(pk__in=ids, status=Status.NHS_FUNDED).count() == len(ids)
    assert PartnerCircuit.objects.get(partner="gateway").times_opened >= 1  # it held sends back

    # When the gateway is back
    gateway.control(down=False)
    wait_until(lambda: delivered_count(ids) == len(ids), seconds=120, what="all delivered after the outage")

    # Then every prescription is delivered, one order each, nothing dead-lettered
    assert_delivered_once_each(gateway, ids)


def test_sends_killed_with_their_worker_resume_within_a_minute_with_default_settings(
    clinic_a, paracetamol_loaded, gateway, workers, beat
):
    # Given sends in flight (the gateway answers after 3 s) when their worker is SIGKILLed, and
    # no webhook to help (every one lost): only the owed tasks' lease brings them back
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    ids = nhs_funded_prescriptions(clinic_a, paracetamol_loaded, 6)
    gateway.control(answer_delay=3, drop_next_webhooks=1000)
    first = workers()
    beat()
    outbox_relay_all()
    wait_until(lambda: gateway.stats()["orders"] >= 2, seconds=60, what="sends in flight")
    stop_process(first, sig=signal.SIGKILL)
    killed_at = time.monotonic()

    # When a new worker starts, with the default lease (45 s) and relay (every 2 s)
    gateway.control(answer_delay=0)
    workers()
    acknowledged = [Status.ACKNOWLEDGED, Status.DISPENSED, Status.SHIPPED, Status.DELIVERED]
    wait_until(
        lambda: Prescription.objects.filter(pk__in=ids, status__in=acknowledged).count() == len(ids),
        seconds=120,
        what="every send resumed and acknowledged",
    )
    recovery = time.monotonic() - killed_at

    # Then every order is acknowledged once, within a minute of the kill
    assert_one_order_per_prescription(gateway, ids)
    assert not DeadLetter.objects.exists()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with (LOG_DIR / "recovery.txt").open("a") as report:
        report.write(
            f"sends killed with their worker (no webhooks): all 6 acknowledged {recovery:.1f}s after the kill\n"
        )
    assert recovery <= 60
