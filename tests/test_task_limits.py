"""Beat refuses to send a task whose soft time limit exceeds its hard one ("Couldn't apply
scheduled task"), so every task's effective soft limit must sit below its effective hard limit."""

from django.conf import settings

from config.celery import app


def _effective_limits(task) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    hard = task.time_limit if task.time_limit is not None else settings.CELERY_TASK_TIME_LIMIT
    soft = task.soft_time_limit if task.soft_time_limit is not None else settings.CELERY_TASK_SOFT_TIME_LIMIT
    return soft, hard


def test_every_registered_task_has_its_soft_time_limit_below_its_hard_one():
    app.loader.import_default_modules()
    ours = {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}

    assert len(ours) >= 10
    too_late = {name: _effective_limits(task) for name, task in ours.items() if not _soft_below_hard(task)}
    assert too_late == {}


def test_every_beat_entry_names_a_registered_task():
    app.loader.import_default_modules()

    missing = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()} - set(app.tasks)
    assert missing == set()


def _soft_below_hard(task) -> bool:  # type: ignore[no-untyped-def]
    soft, hard = _effective_limits(task)
    return soft < hard
