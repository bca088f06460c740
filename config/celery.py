import os

from celery import Celery

from common.logs import celery_signals_connect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("scriptline")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The request id of the web request (or task) that published a task follows it (common/logs.py).
celery_signals_connect()
