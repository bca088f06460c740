import os
from typing import Any

from celery import Celery, signals
from django.db import close_old_connections, connections

from common.logs import celery_signals_connect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("scriptline")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _connections_tidy(sender: Any = None, **kwargs: Any) -> None:
    # Database connections live per task as per web request (settings.CELERY_DB_REUSE_MAX);
    # a task run inside its caller's transaction (eager, or in a test) must keep its connection.
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    if any(connection.in_atomic_block for connection in connections.all(initialized_only=True)):
        return
    close_old_connections()


signals.task_prerun.connect(_connections_tidy, weak=False)
signals.task_postrun.connect(_connections_tidy, weak=False)
# The request id of the web request (or task) that published a task follows it (common/logs.py).
celery_signals_connect()
