"""The pipeline's health in figures, for the operator dashboard and for /metrics.

`pipeline_snapshot()` reads everything in a fixed number of queries, however much data there
is (the dashboard test holds it to that). Broker queue depths are asked of the broker with
short timeouts: an unreachable broker shows as "unknown", never as a slow page.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Min, Q
from django.db.models.functions import TruncHour
from django.urls import reverse
from django.utils import timezone

from events.models import Event, OutboxMessage, WebhookAttempt, WebhookDelivery
from pharmacy.models import DeadLetter, OrderAlert
from pharmacy.services import dispatches_stale
from prescriptions.models import Prescription, Status
from saga.reconciler import stuck_prescriptions
from support.models import Enquiry, TaskStatistic

logger = logging.getLogger(__name__)

# The funnel's order: the journey, then the ways out of it.
FUNNEL = [
    Status.RECEIVED,
    Status.AWAITING_PHARMACIST,
    Status.APPROVED,
    Status.AWAITING_PAYMENT,
    Status.PAYMENT_FAILED,
    Status.PAID,
    Status.NHS_FUNDED,
    Status.ACKNOWLEDGED,
    Status.DISPENSED,
    Status.SHIPPED,
    Status.DELIVERED,
    Status.DEAD_LETTERED,
    Status.REJECTED,
    Status.REJECTED_BY_PHARMACY,
    Status.CANCELLED,
]
THROUGHPUT_TYPES = {"prescription.received": "received", "prescription.delivered": "delivered"}
DEAD_LETTERS_LISTED = 10
WEBHOOK_ENDPOINTS_LISTED = 10

STAGE_DURATIONS_SQL = """
WITH transitions AS (
    SELECT payload->>'to' AS stage, created_at,
           LEAD(created_at) OVER (PARTITION BY aggregate_id ORDER BY sequence) AS left_at
    FROM events_event
    WHERE aggregate_type = 'prescription' AND payload->>'to' IS NOT NULL AND created_at >= %s
)
SELECT stage, count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM left_at - created_at)),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM left_at - created_at))
FROM transitions
WHERE left_at IS NOT NULL
GROUP BY stage
"""


@dataclass(frozen=True)
class StageDuration:
    stage: str
    label: str
    count: int
    p50_seconds: float
    p95_seconds: float


@dataclass
class PipelineSnapshot:
    taken_at: datetime
    by_status: dict[str, int]
    throughput: list[dict[str, Any]]  # 24 hours, oldest first: {"hour", "received", "delivered"}
    dead_letters: int
    oldest_dead_letter_at: datetime | None
    dead_letter_rows: list[DeadLetter]
    webhook_deliveries: dict[str, int]
    failing_endpoints: list[dict[str, Any]]
    webhook_failed_attempts: int
    stuck_prescriptions: int
    stale_dispatches: int
    outbox_unpublished: int
    awaiting_pharmacist: int
    oldest_awaiting_pharmacist_at: datetime | None
    stage_durations: list[StageDuration]
    queue_depths: dict[str, int | None]
    enquiries_open: int
    enquiries_overdue: int
    order_alerts_open: int
    oldest_order_alert_at: datetime | None
    task_statistics: list[TaskStatistic] = field(default_factory=list)

    @property
    def failing_webhooks(self) -> int:
        return sum(row["failed"] + row["retrying"] for row in self.failing_endpoints)

    @property
    def stuck_work(self) -> int:
        return self.stuck_prescriptions + self.stale_dispatches


def _age_minutes(moment: datetime | None, now: datetime) -> float:
    return 0.0 if moment is None else (now - moment).total_seconds() / 60


def _throughput(now: datetime) -> list[dict[str, Any]]:
    start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    rows = (
        Event.objects.filter(aggregate_type="prescription", type__in=THROUGHPUT_TYPES, created_at__gte=start)
        .annotate(hour=TruncHour("created_at"))
        .values("hour", "type")
        .annotate(count=Count("id"))
    )
    hours = [start + timedelta(hours=offset) for offset in range(24)]
    table = {hour: {"hour": hour, "received": 0, "delivered": 0} for hour in hours}
    for row in rows:
        if row["hour"] in table:
            table[row["hour"]][THROUGHPUT_TYPES[row["type"]]] = row["count"]
    return [table[hour] for hour in hours]


def _stage_durations(now: datetime) -> list[StageDuration]:
    labels = dict(Status.choices)
    with connection.cursor() as cursor:
        cursor.execute(STAGE_DURATIONS_SQL, [now - timedelta(hours=24)])
        rows = {stage: (count, p50, p95) for stage, count, p50, p95 in cursor.fetchall()}
    return [
        StageDuration(
            stage=stage,
            label=labels.get(stage, stage),
            count=rows[stage][0],
            p50_seconds=float(rows[stage][1]),
            p95_seconds=float(rows[stage][2]),
        )
        for stage in FUNNEL
        if stage in rows
    ]


def broker_queue_depths(*, broker_url: str | None = None) -> dict[str, int | None]:
    """Messages waiting in each Celery queue (None when the broker cannot be asked)."""
    from config.celery import app

    names = settings.CELERY_QUEUES_ALL.split(",")
    depths: dict[str, int | None] = dict.fromkeys(names)
    try:
        with app.connection_for_read(
            broker_url,
            connect_timeout=2,
            transport_options={"socket_timeout": 2, "socket_connect_timeout": 2},
        ) as broker:
            broker.ensure_connection(max_retries=1, timeout=2)
            for name in names:
                channel: Any = broker.channel()  # the transport's channel, wider than kombu's StdChannel
                try:
                    depths[name] = channel.queue_declare(queue=name, passive=True).message_count
                except Exception:  # a queue that does not exist yet holds nothing
                    depths[name] = 0
                finally:
                    with contextlib.suppress(Exception):  # a channel the broker already closed
                        channel.close()
    except Exception as error:  # the dashboard must render when the broker is down
        logger.warning("broker queue depths unavailable: %s", type(error).__name__)
        return dict.fromkeys(names)
    return depths


def pipeline_snapshot(*, with_queue_depths: bool = True) -> PipelineSnapshot:
    now = timezone.now()
    by_status: dict[str, int] = dict.fromkeys(FUNNEL, 0)
    by_status.update(Prescription.objects.order_by().values_list("status").annotate(count=Count("id")))
    waiting = Prescription.objects.filter(status=Status.AWAITING_PHARMACIST).aggregate(
        count=Count("id"), oldest=Min("created_at")
    )
    # When it entered the queue, not when it was created: the latest awaiting_pharmacist event.
    entered = (
        Event.objects.filter(
            aggregate_type="prescription",
            type="prescription.awaiting_pharmacist",
            aggregate_id__in=Prescription.objects.filter(status=Status.AWAITING_PHARMACIST).values("id"),
        )
        .values("aggregate_id")
        .annotate(entered=Max("created_at"))
        .aggregate(oldest=Min("entered"))["oldest"]
    )
    letters = DeadLetter.objects.filter(resolved_at__isnull=True)
    letter_figures = letters.aggregate(count=Count("id"), oldest=Min("created_at"))
    deliveries = dict(WebhookDelivery.objects.order_by().values_list("status").annotate(count=Count("id")))
    failing = list(
        WebhookDelivery.objects.filter(
            Q(status=WebhookDelivery.Status.FAILED) | Q(status=WebhookDelivery.Status.PENDING, attempts__gt=0)
        )
        .order_by()
        .values("endpoint_id", "endpoint__clinic__name", "endpoint__url")
        .annotate(
            failed=Count("id", filter=Q(status=WebhookDelivery.Status.FAILED)),
            retrying=Count("id", filter=Q(status=WebhookDelivery.Status.PENDING)),
            oldest=Min("created_at"),
        )
        .order_by("-failed", "-retrying")[:WEBHOOK_ENDPOINTS_LISTED]
    )
    enquiries = Enquiry.objects.exclude(status=Enquiry.Status.RESOLVED).aggregate(
        open=Count("id"), overdue=Count("id", filter=Q(due_at__lt=now))
    )
    alerts = OrderAlert.objects.filter(resolved_at__isnull=True).aggregate(
        count=Count("id"), oldest=Min("created_at")
    )
    return PipelineSnapshot(
        taken_at=now,
        by_status=by_status,
        throughput=_throughput(now),
        dead_letters=letter_figures["count"],
        oldest_dead_letter_at=letter_figures["oldest"],
        dead_letter_rows=list(
            letters.select_related("dispatch").order_by("created_at", "id")[:DEAD_LETTERS_LISTED]
        ),
        webhook_deliveries=deliveries,
        failing_endpoints=failing,
        webhook_failed_attempts=WebhookAttempt.objects.exclude(error="").count(),
        stuck_prescriptions=stuck_prescriptions(older_than_seconds=settings.RECONCILE_STALE_SECONDS).count(),
        stale_dispatches=dispatches_stale(
            older_than_seconds=settings.RECONCILE_DISPATCH_STALE_SECONDS
        ).count(),
        outbox_unpublished=OutboxMessage.objects.filter(published_at__isnull=True).count(),
        awaiting_pharmacist=waiting["count"],
        oldest_awaiting_pharmacist_at=entered or waiting["oldest"],
        stage_durations=_stage_durations(now),
        queue_depths=broker_queue_depths() if with_queue_depths else {},
        enquiries_open=enquiries["open"],
        enquiries_overdue=enquiries["overdue"],
        order_alerts_open=alerts["count"],
        oldest_order_alert_at=alerts["oldest"],
        task_statistics=list(TaskStatistic.objects.order_by("queue", "task", "outcome")),
    )


# --- Tiles: a figure, its threshold, red when over ------------------------------------------------


@dataclass(frozen=True)
class Tile:
    key: str
    title: str
    value: str
    detail: str
    is_red: bool
    url: str = ""  # where the figure's rows are listed, if anywhere


def _minutes_text(minutes: float) -> str:
    if minutes < 1:
        return "under a minute"
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"


def tiles(snapshot: PipelineSnapshot, *, order_alerts: bool = True) -> list[Tile]:
    """The tiles, in order; the open order alerts only with `order_alerts` (staff who may view
    them, see support/roles.py)."""
    limits = settings.DASHBOARD_THRESHOLDS
    now = snapshot.taken_at
    waiting_minutes = _age_minutes(snapshot.oldest_awaiting_pharmacist_at, now)
    letter_minutes = _age_minutes(snapshot.oldest_dead_letter_at, now)
    known_depths = [depth for depth in snapshot.queue_depths.values() if depth is not None]
    deepest = max(known_depths, default=0)
    slowest_p95 = max((stage.p95_seconds / 60 for stage in snapshot.stage_durations), default=0.0)
    alert_minutes = _age_minutes(snapshot.oldest_order_alert_at, now)
    alert_tiles = [
        Tile(
            "open_order_alerts",
            "Open order alerts",
            str(snapshot.order_alerts_open),
            f"oldest {_minutes_text(alert_minutes)}" if snapshot.order_alerts_open else "none open",
            snapshot.order_alerts_open > limits["open_order_alerts"],
            reverse("admin:pharmacy_orderalert_changelist") + "?resolved_at__isempty=1",
        )
    ]
    return [
        Tile(
            "dead_letters",
            "Dead letters",
            str(snapshot.dead_letters),
            f"oldest {_minutes_text(letter_minutes)}" if snapshot.dead_letters else "none waiting",
            snapshot.dead_letters > limits["dead_letters"]
            or (snapshot.dead_letters > 0 and letter_minutes > limits["oldest_dead_letter_minutes"]),
        ),
        Tile(
            "awaiting_pharmacist",
            "Awaiting a pharmacist",
            str(snapshot.awaiting_pharmacist),
            f"oldest waiting {_minutes_text(waiting_minutes)}"
            if snapshot.awaiting_pharmacist
            else "queue empty",
            snapshot.awaiting_pharmacist > 0
            and waiting_minutes > limits["oldest_awaiting_pharmacist_minutes"],
        ),
        Tile(
            "failing_webhooks",
            "Failing clinic webhooks",
            str(snapshot.failing_webhooks),
            f"{len(snapshot.failing_endpoints)} endpoint(s)"
            if snapshot.failing_endpoints
            else "all delivered",
            snapshot.failing_webhooks > limits["failing_webhooks"],
        ),
        Tile(
            "stuck_work",
            "Stuck work",
            str(snapshot.stuck_work),
            f"{snapshot.stuck_prescriptions} prescription(s), {snapshot.stale_dispatches} dispatch(es)",
            snapshot.stuck_work > limits["stuck_work"],
        ),
        Tile(
            "queue_depth",
            "Deepest queue",
            str(deepest) if known_depths else "unknown",
            "broker unreachable" if not known_depths else f"{sum(known_depths)} message(s) in all",
            not known_depths or deepest > limits["queue_depth"],
        ),
        Tile(
            "overdue_enquiries",
            "Overdue enquiries",
            str(snapshot.enquiries_overdue),
            f"{snapshot.enquiries_open} open",
            snapshot.enquiries_overdue > limits["overdue_enquiries"],
        ),
        Tile(
            "stage_p95",
            "Slowest stage (p95)",
            _minutes_text(slowest_p95) if snapshot.stage_durations else "—",
            "last 24 hours",
            slowest_p95 > limits["stage_p95_minutes"],
        ),
        *(alert_tiles if order_alerts else []),
    ]
