"""Repeat series: each due repeat is issued once, as a new prescription that runs
through the clinical checks again, linked to the one it repeats."""

from __future__ import annotations

import logging
from datetime import date, timedelta

from django.db import transaction
from django.utils import timezone

from prescriptions import services
from prescriptions.models import Prescription, RepeatSeries, Status

logger = logging.getLogger(__name__)

# A repeat follows only a prescription that is going ahead; anything else ends the series.
ENDED = frozenset({Status.REJECTED, Status.CANCELLED, Status.REJECTED_BY_PHARMACY})


def repeat_series_start(*, prescription_id: int) -> RepeatSeries | None:
    """Consumer of approval events: an approved prescription with repeats starts its series.

    Only an original starts one (a repeat issue carries repeats=0). GB Schedule 2/3 drugs
    with repeats never get here: the clinical checks reject them.
    """
    prescription = (
        Prescription.objects.prefetch_related("items")
        .filter(pk=prescription_id, repeats__gt=0, previous__isnull=True)
        .exclude(status__in=ENDED)
        .first()
    )
    if prescription is None:
        return None
    interval = prescription.repeat_interval_days or max(item.days_supply for item in prescription.items.all())
    series, _ = RepeatSeries.objects.get_or_create(
        origin=prescription,
        defaults={
            "latest": prescription,
            "interval_days": interval,
            "repeats_total": prescription.repeats,
            "next_due_on": prescription.issued_on + timedelta(days=interval),
        },
    )
    return series


def repeat_series_issue_due(*, today: date | None = None) -> list[int]:
    """Issue every due repeat once; returns the new prescriptions' ids.

    Each series is claimed with SKIP LOCKED and its `next_due_on` moved in the same
    transaction as the new prescription, so a second scheduler running at once skips the
    row, and one running afterwards no longer finds it due.
    """
    today = today or timezone.localdate()
    issued: list[int] = []
    while True:
        with transaction.atomic():
            series = (
                RepeatSeries.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("latest__clinic", "latest__patient", "latest__prescriber")
                .filter(status=RepeatSeries.Status.ACTIVE, next_due_on__lte=today)
                .order_by("next_due_on", "pk")
                .first()
            )
            if series is None:
                return issued
            new = _issue(series, today)
        if new is not None:
            issued.append(new)


def _issue(series: RepeatSeries, today: date) -> int | None:
    latest = series.latest
    if latest.status in ENDED:
        _end(series, RepeatSeries.Status.STOPPED, f"prescription #{latest.pk} was {latest.status}")
        return None
    items = [
        {
            "medication": item.medication,
            "dose_text": item.dose_text,
            "quantity": item.quantity,
            "unit": item.unit,
            "days_supply": item.days_supply,
            "quantity_words": item.quantity_words,
            "units_per_day": item.units_per_day,
            "units_per_dose": item.units_per_dose,
        }
        for item in latest.items.select_related("medication")
    ]
    new = services.prescription_create(
        clinic=latest.clinic,
        patient=latest.patient,
        prescriber=latest.prescriber,
        items=items,
        issued_on=today,
        note=latest.note,
        clinical_justification=latest.clinical_justification,
        two_factor_signed_at=latest.two_factor_signed_at,
        funding=latest.funding,
        nhs_exemption={"category": latest.nhs_exemption_category, "evidence": latest.nhs_exemption_evidence}
        if latest.nhs_exemption_category
        else None,
        repeat_of=latest,
        actor=f"repeat-series:{series.pk}",
    )
    series.issued_count += 1
    series.latest = new
    done = series.issued_count >= series.repeats_total
    series.next_due_on = None if done else today + timedelta(days=series.interval_days)
    series.status = RepeatSeries.Status.COMPLETED if done else RepeatSeries.Status.ACTIVE
    series.save(update_fields=["issued_count", "latest", "next_due_on", "status", "updated_at"])
    logger.info("repeat %s of series %s issued as prescription %s", series.issued_count, series.pk, new.pk)
    return new.pk


def _end(series: RepeatSeries, status: str, reason: str) -> None:
    RepeatSeries.objects.filter(pk=series.pk).update(
        status=status, status_reason=reason[:300], next_due_on=None, updated_at=timezone.now()
    )


def repeat_series_pause(*, series_id: int, actor: str) -> bool:
    return bool(
        RepeatSeries.objects.filter(pk=series_id, status=RepeatSeries.Status.ACTIVE).update(
            status=RepeatSeries.Status.PAUSED,
            status_reason=f"paused by {actor}"[:300],
            updated_at=timezone.now(),
        )
    )


def repeat_series_resume(*, series_id: int, actor: str) -> bool:
    """A resumed series issues at its stored due date (at once if that has passed)."""
    return bool(
        RepeatSeries.objects.filter(pk=series_id, status=RepeatSeries.Status.PAUSED).update(
            status=RepeatSeries.Status.ACTIVE,
            status_reason=f"resumed by {actor}"[:300],
            updated_at=timezone.now(),
        )
    )


def repeat_series_stop(*, series_id: int, actor: str) -> bool:
    return bool(
        RepeatSeries.objects.filter(
            pk=series_id, status__in=[RepeatSeries.Status.ACTIVE, RepeatSeries.Status.PAUSED]
        ).update(
            status=RepeatSeries.Status.STOPPED,
            status_reason=f"stopped by {actor}"[:300],
            next_due_on=None,
            updated_at=timezone.now(),
        )
    )
