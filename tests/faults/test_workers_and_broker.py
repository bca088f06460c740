"""Workers killed mid-dispatch, tasks redelivered while still running, and a broker restart,
on Redis or RabbitMQ (tests/test_rabbitmq.py runs this suite in a vhost of its own).

Invariant 7 (nothing accepted is lost) and invariant 2 (at most one pharmacy order per
prescription), counted at the gateway simulator rather than read from logs.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings

from config import embedded
from events.services import outbox_relay
from pharmacy.models import Dispatch
from prescriptions.models import Prescription, Status
from tests.faults.pipeline import (
    FAST_REDELIVERY,
    acknowledged_count,
    assert_one_order_per_prescription,
    nhs_funded_prescriptions,
    wait_with_reconciler,
)
from tests.processes import (
    broker_flush,
    rabbitmq_connections_close,
    rabbitmq_vhost_disposable,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.faults

DISPATCH_COUNT = int(os.environ.get("FAULTS_DISPATCH_COUNT", "200"))


def test_a_worker_killed_mid_dispatch_loses_nothing_and_orders_once(
    clinic_a, paracetamol_loaded, gateway, workers
):
    # Invariant: every prescription ends acknowledged, with exactly one gateway order each,
    # although the worker is SIGKILLed (process group) while it is dispatching them.
    ids = nhs_funded_prescriptions(clinic_a, paracetamol_loaded, DISPATCH_COUNT)
    gateway.control(latency=0.05)
    first = workers(**FAST_REDELIVERY)
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    outbox_relay()

    wait_until(
        lambda: acknowledged_count(ids) >= DISPATCH_COUNT // 5, seconds=60, what="dispatching under way"
    )
    stop_process(first, sig=signal.SIGKILL)
    killed_at = acknowledged_count(ids)
    assert killed_at < DISPATCH_COUNT  # the kill really landed mid-run

    workers(**FAST_REDELIVERY)
    wait_with_reconciler(
        lambda: acknowledged_count(ids) == DISPATCH_COUNT, seconds=90, what="all acknowledged"
    )

    assert_one_order_per_prescription(gateway, ids)
    assert (
        Dispatch.objects.filter(prescription_id__in=ids, status=Dispatch.Status.ACKNOWLEDGED).count()
        == DISPATCH_COUNT
    )


def test_a_task_redelivered_while_its_first_run_waits_on_the_gateway_runs_twice_but_orders_once(
    clinic_a, paracetamol_loaded, gateway, workers
):
    # Invariant: a dispatch delivered a second time while its first run is still waiting on the
    # gateway (latency 4 s) makes one order and one acknowledged event. Each broker redelivers
    # in its own way: Redis once the visibility timeout (2 s) passes, the first run still
    # going; RabbitMQ at once when the consumer holding it unacknowledged dies.
    (prescription_id,) = nhs_funded_prescriptions(clinic_a, paracetamol_loaded, 1)
    gateway.control(latency=4)
    if settings.CELERY_BROKER_IS_AMQP:
        first = workers()
        outbox_relay()
        wait_until(lambda: gateway.stats()["requests"] >= 1, seconds=30, what="the first send")
        stop_process(first, sig=signal.SIGKILL)
        workers()
    else:
        workers(**{**FAST_REDELIVERY, "CELERY_VISIBILITY_TIMEOUT": "2"})
        outbox_relay()

    # Well inside the owed task's lease (45 s): the broker's redelivery, not the relay's.
    wait_until(
        lambda: Prescription.objects.filter(pk=prescription_id, status=Status.ACKNOWLEDGED).exists(),
        seconds=30,
        what="acknowledged",
    )
    # Let any redelivered copy finish too before counting.
    wait_until(lambda: gateway.stats()["requests"] >= 2, seconds=15, what="the redelivered send")
    time.sleep(4.5)

    dispatch = Dispatch.objects.get(prescription_id=prescription_id)
    assert dispatch.attempts == 2  # the task really ran twice against the gateway
    assert gateway.stats()["duplicates"] == 1
    assert_one_order_per_prescription(gateway, [prescription_id])


@pytest.mark.skipif(
    bool(os.environ.get("CELERY_BROKER_URL")) and rabbitmq_vhost_disposable() is None,
    reason="breaks the embedded Redis or a RabbitMQ vhost made for the run; a configured broker is not ours",
)
def test_a_broker_restarted_without_its_data_mid_run_loses_nothing(
    clinic_a, paracetamol_loaded, gateway, workers
):
    # Invariant: a broker restart that drops every queued message (no persistence) delays work
    # but loses none: the outbox relay and the reconciler republish it, one order each.
    count = 40
    ids = nhs_funded_prescriptions(clinic_a, paracetamol_loaded, count)
    gateway.control(latency=0.1)
    workers(**FAST_REDELIVERY)
    outbox_relay()
    wait_until(lambda: acknowledged_count(ids) >= 5, seconds=30, what="dispatching under way")

    vhost = rabbitmq_vhost_disposable()
    if vhost is not None:
        # Every connection dropped (the unacknowledged messages go back to their queues), then
        # every queue emptied: what a restarted RabbitMQ without its data would hold.
        rabbitmq_connections_close(vhost)
        lost_at = acknowledged_count(ids)
        broker_flush()
    else:
        redis_dir = Path(settings.VAR_DIR) / "redis"
        os.kill(int((redis_dir / "redis.pid").read_text().strip()), signal.SIGKILL)
        wait_until(
            lambda: not (redis_dir / "redis.sock").exists() or _redis_down(redis_dir),
            seconds=10,
            what="redis down",
        )
        lost_at = acknowledged_count(ids)
        time.sleep(1)
        embedded.redis_url(Path(settings.VAR_DIR))
        broker_flush()
    assert lost_at < count

    wait_with_reconciler(lambda: acknowledged_count(ids) == count, seconds=90, what="all acknowledged")
    assert_one_order_per_prescription(gateway, ids)


def _redis_down(redis_dir: Path) -> bool:
    return not embedded._redis_answers(redis_dir / "redis.sock")
