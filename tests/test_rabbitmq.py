"""The same code on RabbitMQ: the journey suite and the fault suite run against a real RabbitMQ
broker, each in a virtual host of its own, and every task queue the journey declared is a quorum
queue on a topic exchange.

CI's machine runs RabbitMQ on 127.0.0.1:5672 (guest/guest) with `rabbitmqctl`; there the test
must run. Elsewhere, without a RabbitMQ server, it says how to get one and is skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.processes import RABBITMQ_TEST_VHOST_PREFIX

ROOT = Path(__file__).resolve().parent.parent
RABBITMQ = ("127.0.0.1", 5672)


def _rabbitmq_available() -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(RABBITMQ) == 0 and shutil.which("rabbitmqctl") is not None


def _rabbitmqctl(*arguments: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", *arguments], check=True, capture_output=True, text=True, timeout=60
    ).stdout


@pytest.fixture
def vhost() -> Iterator[str]:
    if not _rabbitmq_available():
        if os.environ.get("CI"):
            pytest.fail("CI runs RabbitMQ on 127.0.0.1:5672 with rabbitmqctl; neither answered")
        pytest.skip("no RabbitMQ here: apt-get install rabbitmq-server (guest/guest on 127.0.0.1:5672)")
    name = f"{RABBITMQ_TEST_VHOST_PREFIX}{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    try:
        yield name
    finally:
        _rabbitmqctl("delete_vhost", name)


def _suite_on_rabbitmq(vhost: str, *arguments: str, timeout: int) -> str:
    """Run pytest on `arguments` in a child process whose broker is `vhost`; its summary line."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *arguments, "-q", "-p", "no:randomly", "-x"],
        cwd=ROOT,
        env={
            **os.environ,
            "CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
            # Its own test database, beside this run's.
            "DATABASE_TEST_NAME": f"{settings.DATABASES['default']['TEST']['NAME']}_rabbitmq",
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in summary
    assert "skipped" not in summary
    return summary


@pytest.mark.timeout(1200)
def test_the_journey_suite_passes_on_rabbitmq_with_quorum_queues(vhost: str):
    _suite_on_rabbitmq(vhost, "tests/e2e/test_journey.py", timeout=900)

    queues = dict(
        line.split("\t")[:2] for line in _rabbitmqctl("list_queues", "-p", vhost, "name", "type").splitlines()
    )
    task_queues = settings.CELERY_QUEUES_ALL.split(",")
    assert {name: queues.get(name) for name in task_queues} == dict.fromkeys(task_queues, "quorum")
    exchanges = dict(
        line.split("\t")[:2]
        for line in _rabbitmqctl("list_exchanges", "-p", vhost, "name", "type").splitlines()
    )
    assert {name: exchanges.get(name) for name in task_queues} == dict.fromkeys(task_queues, "topic")


@pytest.mark.faults
@pytest.mark.timeout(1800)
def test_the_fault_suite_passes_on_rabbitmq(vhost: str):
    # Workers SIGKILLed mid-task, every connection of the vhost dropped and its queues purged
    # (a restart without data), the queues flushed under pending compensations: the same
    # invariants as on Redis, with RabbitMQ's redelivery (at once, when a consumer dies).
    summary = _suite_on_rabbitmq(vhost, "tests/faults", "-m", "faults", timeout=1500)
    assert "failed" not in summary
