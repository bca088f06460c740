"""The same code on RabbitMQ: the journey suite runs against a real RabbitMQ broker, in a virtual
host of its own, and every task queue it declared is a quorum queue on a topic exchange.

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
    name = f"scriptline-test-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    try:
        yield name
    finally:
        _rabbitmqctl("delete_vhost", name)


@pytest.mark.timeout(1200)
def test_the_journey_suite_passes_on_rabbitmq_with_quorum_queues(vhost: str):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/e2e/test_journey.py", "-q", "-p", "no:randomly", "-x"],
        cwd=ROOT,
        env={
            **os.environ,
            "CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
            # Its own test database, beside this run's.
            "DATABASE_TEST_NAME": f"{settings.DATABASES['default']['TEST']['NAME']}_rabbitmq",
        },
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in summary
    assert "skipped" not in summary

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
