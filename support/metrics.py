"""Prometheus metrics: `GET /metrics` with `Authorization: Bearer <METRICS_TOKEN>`.

Figures come from the database at scrape time (support.dashboard.pipeline_snapshot: the same
ones the operator dashboard shows), so any web process answers for the whole system and no
process keeps state. Celery task outcomes and run times are written by the workers
themselves (task_postrun, below) into one cumulative row per (queue, task, outcome).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from celery import signals
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from support.dashboard import pipeline_snapshot

logger = logging.getLogger(__name__)

# Upper bounds (seconds) of the task run-time histogram buckets; +Inf is the count.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# Counters grow in place, one statement for a batch of (queue, task, outcome) rows; arrays of
# different lengths (buckets changed between releases) add up as far as the new one goes.
RECORD_SQL = """
INSERT INTO support_taskstatistic (queue, task, outcome, count, seconds_total, bucket_counts, updated_at)
SELECT queue, task, outcome, count, seconds_total, buckets, now()
FROM jsonb_to_recordset(%s::jsonb)
    AS batch(queue text, task text, outcome text, count int, seconds_total float8, buckets int[])
ON CONFLICT (queue, task, outcome) DO UPDATE SET
    count = support_taskstatistic.count + EXCLUDED.count,
    seconds_total = support_taskstatistic.seconds_total + EXCLUDED.seconds_total,
    bucket_counts = ARRAY(
        SELECT COALESCE(old, 0) + COALESCE(new, 0)
        FROM unnest(support_taskstatistic.bucket_counts, EXCLUDED.bucket_counts) AS pair(old, new)
        LIMIT cardinality(EXCLUDED.bucket_counts)
    ),
    updated_at = now()
"""

# What this process measured and has not written yet: (queue, task, outcome) → count,
# seconds, bucket counts. A worker writes at most every TASK_STATISTICS_FLUSH_SECONDS and when
# its process ends, not after every task (a row lock and a commit per task would cost more
# than many of the tasks measured).
_pending: dict[tuple[str, str, str], list[Any]] = {}
_flushed_at = 0.0


def task_statistic_add(*, queue: str, task: str, outcome: str, seconds: float) -> None:
    entry = _pending.setdefault((queue[:40], task[:120], outcome[:10]), [0, 0.0, [0] * len(LATENCY_BUCKETS)])
    entry[0] += 1
    entry[1] += seconds
    for index, bound in enumerate(LATENCY_BUCKETS):
        if seconds <= bound:
            entry[2][index] += 1


def task_statistics_flush() -> int:
    """Write what this process has measured; returns how many rows it touched."""
    global _flushed_at
    _flushed_at = time.monotonic()
    if not _pending:
        return 0
    batch = [
        {
            "queue": queue,
            "task": task,
            "outcome": outcome,
            "count": count,
            "seconds_total": seconds,
            "buckets": buckets,
        }
        for (queue, task, outcome), (count, seconds, buckets) in _pending.items()
    ]
    _pending.clear()
    # A statistic lost in a crash costs nothing: this commit does not wait for the disk.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
        cursor.execute(RECORD_SQL, [json.dumps(batch)])
    return len(batch)


# --- Celery hooks (connected in SupportConfig.ready; they fire only inside workers) -----------

_started: dict[str, float] = {}


def _on_task_prerun(task_id: str | None = None, **kwargs: Any) -> None:
    if task_id:
        _started[task_id] = time.monotonic()


def _on_task_postrun(
    task_id: str | None = None, task: Any = None, state: str | None = None, **kwargs: Any
) -> None:
    started = _started.pop(task_id or "", None)
    if started is None or task is None:
        return
    delivery = getattr(task.request, "delivery_info", None) or {}
    queue = delivery.get("routing_key") or settings.CELERY_TASK_DEFAULT_QUEUE
    outcome = {"SUCCESS": "success", "RETRY": "retry", "FAILURE": "failure"}.get(state or "", "other")
    task_statistic_add(queue=queue, task=task.name, outcome=outcome, seconds=time.monotonic() - started)
    if time.monotonic() - _flushed_at >= settings.TASK_STATISTICS_FLUSH_SECONDS:
        _flush_quietly()


def _flush_quietly(**kwargs: Any) -> None:
    try:
        task_statistics_flush()
    except DatabaseError:
        # Metrics must never fail the work they measure.
        logger.warning("task statistics not recorded")


def task_metrics_connect() -> None:
    signals.task_prerun.connect(_on_task_prerun, weak=False, dispatch_uid="support.metrics.prerun")
    signals.task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid="support.metrics.postrun")
    signals.worker_process_shutdown.connect(_flush_quietly, weak=False, dispatch_uid="support.metrics.flush")


# --- The exposition -------------------------------------------------------------------------------


class PipelineCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        snapshot = pipeline_snapshot()
        now = snapshot.taken_at

        prescriptions = GaugeMetricFamily(
            "scriptline_prescriptions", "Prescriptions in each status now.", labels=["status"]
        )
        for status, count in snapshot.by_status.items():
            prescriptions.add_metric([status], count)
        yield prescriptions

        transitions = CounterMetricFamily(
            "scriptline_prescription_transitions",
            "Prescription status changes recorded (the event log), by the status entered.",
            labels=["status"],
        )
        for status, count in _transition_counts().items():
            transitions.add_metric([status], count)
        yield transitions

        yield GaugeMetricFamily(
            "scriptline_dead_letters",
            "Dead-lettered dispatches awaiting an operator.",
            value=snapshot.dead_letters,
        )
        yield GaugeMetricFamily(
            "scriptline_dead_letter_oldest_age_seconds",
            "Age of the oldest unresolved dead letter (0 when none).",
            value=(now - snapshot.oldest_dead_letter_at).total_seconds()
            if snapshot.oldest_dead_letter_at
            else 0,
        )
        yield GaugeMetricFamily(
            "scriptline_awaiting_pharmacist",
            "Prescriptions waiting for a pharmacist.",
            value=snapshot.awaiting_pharmacist,
        )
        yield GaugeMetricFamily(
            "scriptline_awaiting_pharmacist_oldest_age_seconds",
            "How long the longest-waiting prescription has waited for a pharmacist (0 when none).",
            value=(now - snapshot.oldest_awaiting_pharmacist_at).total_seconds()
            if snapshot.oldest_awaiting_pharmacist_at
            else 0,
        )

        deliveries = GaugeMetricFamily(
            "scriptline_webhook_deliveries", "Clinic webhook deliveries by status.", labels=["status"]
        )
        for status in ("pending", "delivered", "failed"):
            deliveries.add_metric([status], snapshot.webhook_deliveries.get(status, 0))
        yield deliveries
        yield GaugeMetricFamily(
            "scriptline_webhook_deliveries_failing",
            "Clinic webhook deliveries failed for good or still being retried after a failure.",
            value=snapshot.failing_webhooks,
        )
        yield CounterMetricFamily(
            "scriptline_webhook_failures",
            "Clinic webhook attempts that failed (non-2xx or no answer).",
            value=snapshot.webhook_failed_attempts,
        )

        stuck = GaugeMetricFamily(
            "scriptline_stuck_work", "Work the reconciler would re-enqueue now.", labels=["kind"]
        )
        stuck.add_metric(["prescription"], snapshot.stuck_prescriptions)
        stuck.add_metric(["dispatch"], snapshot.stale_dispatches)
        yield stuck
        yield GaugeMetricFamily(
            "scriptline_outbox_unpublished",
            "Outbox rows not yet published to the broker.",
            value=snapshot.outbox_unpublished,
        )

        depths = GaugeMetricFamily(
            "scriptline_queue_depth",
            "Messages waiting in each Celery queue (absent: broker unreachable).",
            labels=["queue"],
        )
        for queue, depth in snapshot.queue_depths.items():
            if depth is not None:
                depths.add_metric([queue], depth)
        yield depths
        yield GaugeMetricFamily(
            "scriptline_broker_up",
            "1 when the broker answered the queue-depth questions.",
            value=1 if any(depth is not None for depth in snapshot.queue_depths.values()) else 0,
        )

        stages = GaugeMetricFamily(
            "scriptline_stage_duration_seconds",
            "Time spent in each status over the last 24 hours, by quantile.",
            labels=["stage", "quantile"],
        )
        for stage in snapshot.stage_durations:
            stages.add_metric([stage.stage, "0.5"], stage.p50_seconds)
            stages.add_metric([stage.stage, "0.95"], stage.p95_seconds)
        yield stages

        enquiries = GaugeMetricFamily(
            "scriptline_enquiries_open", "Support enquiries not yet resolved.", labels=["overdue"]
        )
        enquiries.add_metric(["true"], snapshot.enquiries_overdue)
        enquiries.add_metric(["false"], snapshot.enquiries_open - snapshot.enquiries_overdue)
        yield enquiries

        runs = CounterMetricFamily(
            "scriptline_task_runs",
            "Celery task runs by queue, task and outcome.",
            labels=["queue", "task", "outcome"],
        )
        durations = HistogramMetricFamily(
            "scriptline_task_duration_seconds",
            "Celery task run time by queue, task and outcome.",
            labels=["queue", "task", "outcome"],
        )
        for row in snapshot.task_statistics:
            labels = [row.queue, row.task, row.outcome]
            runs.add_metric(labels, row.count)
            counts = list(row.bucket_counts) + [0] * (len(LATENCY_BUCKETS) - len(row.bucket_counts))
            buckets = [(f"{bound:g}", counts[index]) for index, bound in enumerate(LATENCY_BUCKETS)]
            durations.add_metric(labels, [*buckets, ("+Inf", row.count)], sum_value=row.seconds_total)
        yield runs
        yield durations


def _transition_counts() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT payload->>'to', count(*) FROM events_event "
            "WHERE aggregate_type = 'prescription' AND payload->>'to' IS NOT NULL GROUP BY 1"
        )
        return dict(cursor.fetchall())


def metrics_exposition() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector())
    return generate_latest(registry)


def _authorised(request: HttpRequest) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), settings.METRICS_TOKEN.encode()
    )


def metrics_view(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return HttpResponse(
            "Method not allowed.\n", status=405, content_type="text/plain", headers={"Allow": "GET"}
        )
    if not _authorised(request):
        return HttpResponse(
            "A bearer token is required.\n",
            status=401,
            content_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE_LATEST)
