import os
import time
from typing import Any

from celery import Celery, signals
from django.db import connections

from common.logs import celery_signals_connect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("scriptline")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# A connection that passed a health check this recently is trusted for the next task without
# another `SELECT 1` (a busy worker would otherwise spend a round trip per task on it); an idle
# worker's first task after this long checks again, and so does any task after an error.
HEALTH_CHECK_SECONDS = 5.0


def _connections_tidy(sender: Any = None, **kwargs: Any) -> None:
    # Database connections live per task as per web request (settings.CELERY_DB_REUSE_MAX);
    # a task run inside its caller's transaction (eager, or in a test) must keep its connection.
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    opened = connections.all(initialized_only=True)
    if any(connection.in_atomic_block for connection in opened):
        return
    now = time.monotonic()
    wrapper: Any  # Django's wrapper: health_check_done is not in its type stubs
    for wrapper in opened:
        # Closes a connection that is broken (after an error), past its age or in the wrong mode.
        wrapper.close_if_unusable_or_obsolete()
        if wrapper.connection is None:
            continue
        checked_at = getattr(wrapper, "health_checked_at", None)
        if checked_at is not None and now - checked_at < HEALTH_CHECK_SECONDS:
            wrapper.health_check_done = True
        else:
            # Django checks it on its first query; trust it for HEALTH_CHECK_SECONDS after that.
            wrapper.health_checked_at = now


signals.task_prerun.connect(_connections_tidy, weak=False)
signals.task_postrun.connect(_connections_tidy, weak=False)
# The request id of the web request (or task) that published a task follows it (common/logs.py).
celery_signals_connect()
