"""Celery beat as `make demo` runs it, with a real worker: every scheduled task is applied (sent)
and runs to success. Beat refuses to send a task it cannot apply ("Couldn't apply scheduled
task ...") and logs nothing else about it, so the logs are read rather than the database."""

from __future__ import annotations

import contextlib
import datetime
import json
import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import ModelEntry

from config.celery import app
from tests.processes import purge_queues, start_beat, start_worker, stop_process, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _schedule_everything_due_now() -> None:
    """Store the schedule as beat would and mark every entry last run two days ago, so the
    hourly entries are due at once instead of an hour after beat starts."""
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        ModelEntry.from_entry(name, app=app, **entry)
    PeriodicTask.objects.update(last_run_at=timezone.now() - datetime.timedelta(days=2))


def _succeeded(log: str, task: str) -> bool:
    """The worker's JSON log has the line Celery writes when `task` returned."""
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if (
                isinstance(record, dict)
                and record.get("logger") == "celery.app.trace"
                and str(record.get("event", "")).startswith(f"Task {task}[")
                and " succeeded in " in str(record["event"])
            ):
                return True
    return False


def test_beat_applies_every_schedule_entry_and_a_worker_runs_each_to_success():
    entries = settings.CELERY_BEAT_SCHEDULE
    assert len(entries) >= 4
    _schedule_everything_due_now()
    purge_queues()
    logs = Path(tempfile.mkdtemp(prefix="beat-test-"))
    with (logs / "worker.log").open("w") as worker_log, (logs / "beat.log").open("w") as beat_log:
        worker = start_worker(gateway_url=settings.GATEWAY_URL, loglevel="INFO", log_file=worker_log)
        beat = start_beat(log_file=beat_log)
        try:
            wait_until(
                lambda: all(
                    _succeeded((logs / "worker.log").read_text(), entry["task"]) for entry in entries.values()
                ),
                seconds=90,
                what="every scheduled task to succeed in the worker",
            )
            # A few more relay periods: a refusal would show on every one of them.
            wait_until(
                lambda: (logs / "beat.log").read_text().count("events.tasks.outbox_relay") >= 3,
                seconds=20,
                what="the relay sent three times",
            )
        finally:
            stop_process(beat)
            stop_process(worker)
            purge_queues()

    beat_text = (logs / "beat.log").read_text()
    worker_text = (logs / "worker.log").read_text()
    assert "Couldn't apply" not in beat_text
    for name, entry in entries.items():
        assert f"Sending due task {name} ({entry['task']})" in beat_text
        assert _succeeded(worker_text, entry["task"])
    assert "raised unexpected" not in worker_text
    assert "Traceback" not in beat_text + worker_text
