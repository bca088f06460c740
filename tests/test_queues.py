"""Every routed queue is consumed by the test and demo workers (a queue nobody reads loses work)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from tests.processes import QUEUES

ROOT = Path(__file__).resolve().parent.parent


def test_every_routed_queue_is_in_the_worker_queue_lists():
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    assert routed == set(settings.CELERY_QUEUES_ALL.split(","))
    assert QUEUES == settings.CELERY_QUEUES_ALL
    assert f'"{settings.CELERY_QUEUES_ALL}"' in (ROOT / "scripts" / "demo.py").read_text()


def test_the_dispatch_queue_prefetches_one_task_and_tasks_are_acknowledged_late():
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    assert settings.CELERY_TASK_ACKS_LATE is True
    assert settings.CELERY_TASK_REJECT_ON_WORKER_LOST is True
