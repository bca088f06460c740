"""NHS prescriptions: the per-item charge or exemption, and the monthly claim batch."""

from __future__ import annotations

import csv
import io
import logging
from datetime import UTC, date, datetime, time

from django.db import transaction
from django.db.models import Count, OuterRef, Q, Subquery, Sum
from django.utils import timezone

from billing.models import ClaimBatch, ClaimItem, NhsCharge, NhsChargeRate
from billing.nhs import EXEMPTIONS, age_on
from events.models import Event
from prescriptions import services as prescriptions
from prescriptions.models import Funding, Prescription, PrescriptionItem, Status

logger = logging.getLogger(__name__)

DISPENSED_OR_LATER = (Status.DISPENSED, Status.SHIPPED, Status.DELIVERED)


class NhsChargeRateMissing(Exception):
    """No charge rate applies on the date: finance must add one (terminal until then)."""


def nhs_charge_rate_on(*, on: date) -> NhsChargeRate:
    rate = NhsChargeRate.objects.filter(effective_from__lte=on).order_by("-effective_from").first()
    if rate is None:
        raise NhsChargeRateMissing(f"no NHS prescription charge rate applies on {on}")
    return rate


def nhs_charge_record(*, prescription_id: int) -> str:
    """Record an approved NHS prescription's charge or exemption and move it on to dispatch."""
    prescription = (
        Prescription.objects.select_related("patient")
        .prefetch_related("items")
        .filter(pk=prescription_id, status=Status.APPROVED, funding=Funding.NHS)
        .first()
    )
    if prescription is None:
        return "not-approved"
    exemption = EXEMPTIONS.get(prescription.nhs_exemption_category)
    items = len(prescription.items.all())
    rate = None if exemption else nhs_charge_rate_on(on=prescription.issued_on)
    per_item = rate.amount_minor if rate else 0
    verified = bool(
        exemption
        and exemption.age_checked
        and exemption.covers_age(
            age_on(birth_date=prescription.patient.birth_date, on=prescription.issued_on)
        )
    )
    with transaction.atomic():
        charge, _ = NhsCharge.objects.get_or_create(
            prescription_id=prescription_id,
            defaults={
                "clinic_id": prescription.clinic_id,
                "exemption_category": exemption.code if exemption else "",
                "exemption_evidence": prescription.nhs_exemption_evidence,
                "exemption_verified": verified,
                "rate": rate,
                "items": items,
                "charge_per_item_minor": per_item,
                "total_minor": per_item * items,
            },
        )
        prescriptions.prescription_transition(
            prescription_id=prescription_id,
            to=Status.NHS_FUNDED,
            from_statuses=frozenset({Status.APPROVED}),
            event_type="prescription.nhs_funded",
            # The category itself can reveal health data (maternity, medical): not in events.
            payload={
                "nhs_charge_id": charge.pk,
                "exempt": charge.is_exempt,
                "charge_minor": charge.total_minor,
            },
            actor="billing",
        )
    return "nhs-funded"


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _next_month(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def claim_batch_build(*, month: date) -> ClaimBatch:
    """Build (or top up) a month's claim with every dispensed NHS item not claimed before.

    An item belongs to the first open month whose build finds it dispensed before the month
    ended; the one-to-one ClaimItem → PrescriptionItem makes a second claim impossible, so
    building twice, or two months at once, claims each item once. A submitted batch is frozen.
    """
    month = _month_start(month)
    with transaction.atomic():
        batch, _ = ClaimBatch.objects.get_or_create(month=month)
        batch = ClaimBatch.objects.select_for_update().get(pk=batch.pk)
        if batch.status == ClaimBatch.Status.SUBMITTED:
            return batch
        first_dispensed = (
            Event.objects.filter(
                aggregate_type="prescription",
                aggregate_id=OuterRef("prescription_id"),
                type__in=[f"prescription.{status}" for status in DISPENSED_OR_LATER],
            )
            .order_by("sequence")
            .values("created_at")[:1]
        )
        items = (
            PrescriptionItem.objects.filter(
                prescription__funding=Funding.NHS,
                prescription__status__in=DISPENSED_OR_LATER,
                prescription__nhs_charge__isnull=False,
            )
            .exclude(pk__in=ClaimItem.objects.values("prescription_item_id"))
            .annotate(dispensed_at=Subquery(first_dispensed))
            .filter(dispensed_at__lt=datetime.combine(_next_month(month), time.min, tzinfo=UTC))
            .select_related("prescription__nhs_charge")
        )
        ClaimItem.objects.bulk_create(
            [
                ClaimItem(
                    batch=batch,
                    prescription_item=item,
                    prescription_id=item.prescription_id,
                    clinic_id=item.prescription.clinic_id,
                    dispensed_at=item.dispensed_at,
                    exemption_category=item.prescription.nhs_charge.exemption_category,
                    charge_collected_minor=item.prescription.nhs_charge.charge_per_item_minor,
                )
                for item in items
            ],
            ignore_conflicts=True,
        )
        ClaimBatch.objects.filter(pk=batch.pk).update(built_at=timezone.now())
    batch.refresh_from_db()
    return batch


def claim_batch_submit(*, batch_id: int) -> bool:
    return bool(
        ClaimBatch.objects.filter(pk=batch_id, status=ClaimBatch.Status.OPEN).update(
            status=ClaimBatch.Status.SUBMITTED, submitted_at=timezone.now()
        )
    )


def claim_batch_totals(*, batch_id: int) -> dict[str, int]:
    return ClaimItem.objects.filter(batch_id=batch_id).aggregate(
        items=Count("id"),
        exempt_items=Count("id", filter=~Q(exemption_category="")),
        charges_collected_minor=Sum("charge_collected_minor", default=0),
    )


CSV_COLUMNS = [
    "claim_month",
    "prescription_id",
    "prescription_item_id",
    "clinic_ods_code",
    "medication_code",
    "medication_name",
    "quantity",
    "unit",
    "dispensed_at",
    "exemption_category",
    "charge_collected_pence",
]


def claim_batch_csv(*, batch_id: int) -> str:
    """The claim as CSV, one row per item and a totals row (no patient identifiers)."""
    batch = ClaimBatch.objects.get(pk=batch_id)
    rows = ClaimItem.objects.filter(batch_id=batch_id).select_related(
        "clinic", "prescription_item__medication"
    )
    output = io.StringIO()
    writer = csv.writer(output)
    writer.writerow(CSV_COLUMNS)
    for row in rows.order_by("id"):
        item = row.prescription_item
        writer.writerow(
            [
                f"{batch.month:%Y-%m}",
                row.prescription_id,
                item.pk,
                row.clinic.ods_code,
                item.medication.code,
                item.medication.name,
                item.quantity,
                item.unit,
                row.dispensed_at.isoformat(),
                row.exemption_category,
                row.charge_collected_minor,
            ]
        )
    totals = claim_batch_totals(batch_id=batch_id)
    writer.writerow(
        [
            "TOTAL",
            "",
            totals["items"],
            "",
            "",
            f"{totals['exempt_items']} exempt",
            "",
            "",
            "",
            "",
            totals["charges_collected_minor"],
        ]
    )
    return output.getvalue()
