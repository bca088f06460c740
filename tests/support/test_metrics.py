"""GET /metrics: Prometheus text behind a bearer token, with the dashboard's figures and the
workers' task outcomes and run times."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from support.metrics import LATENCY_BUCKETS, task_statistic_add, task_statistics_flush
from support.models import TaskStatistic
from tests.events.factories import ClinicWebhookEndpointFactory, WebhookAttemptFactory, WebhookDeliveryFactory
from tests.support.factories import dead_lettered_prescription, shipped_prescription

pytestmark = pytest.mark.django_db


def scrape(token: str = "local-metrics-token-do-not-use-in-production"):  # type: ignore[no-untyped-def]
    return Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")


def samples(response) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # type: ignore[no-untyped-def]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer wrong-token",
        "Basic bG9jYWw6dG9rZW4=",
        "Bearer",
        "Bearer local-metrics-token-do-not-use-in-production x",
    ],
)
def test_metrics_need_the_bearer_token(header):
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}

    response = Client().get("/metrics", **extra)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"scriptline_" not in response.content


def test_the_token_comes_from_settings(settings):
    settings.METRICS_TOKEN = "a-production-token"

    assert scrape("a-production-token").status_code == 200
    assert scrape().status_code == 401


def test_metrics_give_prescriptions_by_status_transitions_dead_letters_and_webhook_failures(formulary):
    from events.models import Event

    dead_lettered_prescription()
    shipped = shipped_prescription()
    endpoint = ClinicWebhookEndpointFactory(clinic=shipped.clinic, url="https://clinic.example/h", secret="s")
    event = Event.objects.get(aggregate_id=shipped.pk, type="prescription.shipped")
    delivery = WebhookDeliveryFactory(
        endpoint=endpoint,
        event=event,
        aggregate_id=shipped.pk,
        sequence=event.sequence,
        payload={},
        status="failed",
    )
    WebhookAttemptFactory(delivery=delivery, status_code=500, duration_ms=12, error="HTTP 500")
    WebhookAttemptFactory(delivery=delivery, status_code=200, duration_ms=9, error="")

    response = scrape()
    values = samples(response)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert values[("scriptline_prescriptions", (("status", "dead_lettered"),))] == 1
    assert values[("scriptline_prescriptions", (("status", "shipped"),))] == 1
    assert values[("scriptline_prescriptions", (("status", "delivered"),))] == 0
    assert values[("scriptline_prescription_transitions_total", (("status", "paid"),))] == 2
    assert values[("scriptline_prescription_transitions_total", (("status", "shipped"),))] == 1
    assert values[("scriptline_dead_letters", ())] == 1
    assert values[("scriptline_dead_letter_oldest_age_seconds", ())] >= 0
    assert values[("scriptline_webhook_deliveries", (("status", "failed"),))] == 1
    assert values[("scriptline_webhook_deliveries_failing", ())] == 1
    assert values[("scriptline_webhook_failures_total", ())] == 1
    assert values[("scriptline_broker_up", ())] == 1
    assert values[("scriptline_queue_depth", (("queue", "dispatch"),))] >= 0


def test_task_runs_are_counted_per_queue_task_and_outcome_with_a_latency_histogram():
    task_statistic_record(
        queue="dispatch", task="pharmacy.tasks.dispatch_send", outcome="success", seconds=0.3
    )
    task_statistic_record(
        queue="dispatch", task="pharmacy.tasks.dispatch_send", outcome="success", seconds=7.0
    )
    task_statistic_record(queue="dispatch", task="pharmacy.tasks.dispatch_send", outcome="retry", seconds=2.0)

    values = samples(scrape())

    labels = (("outcome", "success"), ("queue", "dispatch"), ("task", "pharmacy.tasks.dispatch_send"))

    def bucket(bound: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((*labels, ("le", bound))))

    assert values[("scriptline_task_runs_total", labels)] == 2
    assert values[("scriptline_task_duration_seconds_count", labels)] == 2
    assert values[("scriptline_task_duration_seconds_sum", labels)] == pytest.approx(7.3)
    assert values[("scriptline_task_duration_seconds_bucket", bucket("0.25"))] == 0
    assert values[("scriptline_task_duration_seconds_bucket", bucket("0.5"))] == 1
    assert values[("scriptline_task_duration_seconds_bucket", bucket("10"))] == 2
    assert values[("scriptline_task_duration_seconds_bucket", bucket("+Inf"))] == 2
    retry = (("outcome", "retry"), ("queue", "dispatch"), ("task", "pharmacy.tasks.dispatch_send"))
    assert values[("scriptline_task_runs_total", retry)] == 1


def test_the_cumulative_row_adds_up_bucket_by_bucket():
    for seconds in (0.01, 0.2, 0.2, 200.0):
        task_statistic_record(
            queue="checks", task="prescriptions.tasks.prescription_check", outcome="success", seconds=seconds
        )

    row = TaskStatistic.objects.get()

    assert (row.count, row.seconds_total) == (4, pytest.approx(200.41))
    assert row.bucket_counts == [1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 3]
    assert len(row.bucket_counts) == len(LATENCY_BUCKETS)


def test_a_worker_records_its_tasks_through_the_celery_signals(settings):
    from celery import signals

    settings.TASK_STATISTICS_FLUSH_SECONDS = 0

    class Request:
        delivery_info = {"routing_key": "notifications"}

    class Task:
        name = "notifications.tasks.notification_deliver"
        request = Request()

    signals.task_prerun.send(sender=Task, task_id="t-1", task=Task())
    signals.task_postrun.send(sender=Task, task_id="t-1", task=Task(), state="FAILURE")

    row = TaskStatistic.objects.get()
    assert (row.queue, row.task, row.outcome, row.count) == (
        "notifications",
        "notifications.tasks.notification_deliver",
        "failure",
        1,
    )


def test_a_worker_writes_its_statistics_in_batches_not_after_every_task(settings):
    from celery import signals

    from support import metrics

    class Request:
        delivery_info = {"routing_key": "checks"}

    class Task:
        name = "prescriptions.tasks.prescription_check"
        request = Request()

    settings.TASK_STATISTICS_FLUSH_SECONDS = 3600
    metrics.task_statistics_flush()
    for number in range(3):
        signals.task_prerun.send(sender=Task, task_id=f"b-{number}", task=Task())
        signals.task_postrun.send(sender=Task, task_id=f"b-{number}", task=Task(), state="SUCCESS")
    assert not TaskStatistic.objects.exists()

    signals.worker_process_shutdown.send(sender=None, pid=1, exitcode=0)

    row = TaskStatistic.objects.get()
    assert (row.queue, row.outcome, row.count) == ("checks", "success", 3)
    assert row.bucket_counts[-1] == 3


def task_statistic_record(*, queue: str, task: str, outcome: str, seconds: float) -> None:
    task_statistic_add(queue=queue, task=task, outcome=outcome, seconds=seconds)
    task_statistics_flush()
