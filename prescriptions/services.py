"""Prescription operations: the only code that changes a prescription's state.

Every change is a conditional UPDATE guarded by the states it may come from, and records an
event in the same transaction. A guard that matches no row means the change already
happened (a redelivered task, a duplicate webhook) and is a quiet no-op.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from config.problems import Problem
from events.services import event_record
from patients.models import Clinic, Patient
from prescriptions import checks
from prescriptions.models import (
    PharmacistReview,
    Prescriber,
    Prescription,
    PrescriptionItem,
    Status,
)
from support.services import staff_can_decide

logger = logging.getLogger(__name__)

# Which states each state may move to. Anything else is refused.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.RECEIVED: frozenset(
        {Status.APPROVED, Status.AWAITING_PHARMACIST, Status.REJECTED, Status.CANCELLED}
    ),
    Status.AWAITING_PHARMACIST: frozenset({Status.APPROVED, Status.REJECTED, Status.CANCELLED}),
    Status.APPROVED: frozenset({Status.ACKNOWLEDGED, Status.DEAD_LETTERED, Status.CANCELLED}),
    Status.DEAD_LETTERED: frozenset({Status.ACKNOWLEDGED, Status.CANCELLED}),
    Status.ACKNOWLEDGED: frozenset({Status.DISPENSED, Status.SHIPPED, Status.DELIVERED}),
    Status.DISPENSED: frozenset({Status.SHIPPED, Status.DELIVERED}),
    Status.SHIPPED: frozenset({Status.DELIVERED}),
    Status.DELIVERED: frozenset(),
    Status.REJECTED: frozenset(),
    Status.CANCELLED: frozenset(),
}
CANCELLABLE = frozenset({Status.RECEIVED, Status.AWAITING_PHARMACIST, Status.APPROVED, Status.DEAD_LETTERED})


def sources_of(target: str) -> list[str]:
    return [source for source, targets in TRANSITIONS.items() if target in targets]


def prescription_transition(
    *,
    prescription_id: int,
    to: str,
    event_type: str,
    from_statuses: frozenset[str] | None = None,
    payload: dict[str, Any] | None = None,
    actor: str = "",
    **fields: Any,
) -> bool:
    """Move a prescription to `to` if it is in one of `from_statuses`; True if it moved."""
    allowed = set(sources_of(to))
    if from_statuses is not None:
        allowed &= set(from_statuses)
    with transaction.atomic():
        previous = (
            Prescription.objects.select_for_update()
            .filter(pk=prescription_id, status__in=allowed)
            .values("status", "clinic_id")
            .first()
        )
        if previous is None:
            return False
        Prescription.objects.filter(pk=prescription_id).update(status=to, updated_at=timezone.now(), **fields)
        event_record(
            aggregate_type="prescription",
            aggregate_id=prescription_id,
            clinic_id=previous["clinic_id"],
            type=event_type,
            actor=actor,
            payload={"from": previous["status"], "to": to, **(payload or {})},
        )
    return True


@transaction.atomic
def prescription_create(
    *,
    clinic: Clinic,
    patient: Patient,
    prescriber: Prescriber,
    items: list[dict[str, Any]],
    issued_on: date | None = None,
    note: str = "",
    actor: str = "",
) -> Prescription:
    if patient.clinic_id != clinic.pk or prescriber.clinic_id != clinic.pk:
        raise ValueError("patient and prescriber must belong to the prescribing clinic")
    prescription = Prescription.objects.create(
        clinic=clinic,
        patient=patient,
        prescriber=prescriber,
        issued_on=issued_on or timezone.localdate(),
        note=note,
    )
    PrescriptionItem.objects.bulk_create(
        PrescriptionItem(prescription=prescription, **item) for item in items
    )
    event_record(
        aggregate_type="prescription",
        aggregate_id=prescription.pk,
        clinic_id=clinic.pk,
        type="prescription.received",
        actor=actor,
        payload={"to": Status.RECEIVED, "items": len(items)},
    )
    return prescription


def prescription_run_checks(*, prescription_id: int) -> str | None:
    """Run the clinical checks on a received prescription; returns the new status."""
    prescription = (
        Prescription.objects.select_related("clinic")
        .prefetch_related("items__medication")
        .filter(pk=prescription_id, status=Status.RECEIVED)
        .first()
    )
    if prescription is None:
        return None
    results = checks.run_checks(prescription)
    target = checks.outcome(results)
    moved = prescription_transition(
        prescription_id=prescription_id,
        to=target,
        from_statuses=frozenset({Status.RECEIVED}),
        event_type=f"prescription.{target}",
        payload={"checks": [result.code for result in results]},
        check_results=[result.as_dict() for result in results],
        status_reason="; ".join(
            result.message for result in results if result.severity == checks.Severity.BLOCK
        ),
        actor="checks",
    )
    return target if moved else None


def prescription_review(
    *,
    prescription_id: int,
    pharmacist: AbstractBaseUser,
    decision: str,
    reason: str,
) -> PharmacistReview:
    """Record a pharmacist's approval or rejection and move the prescription on."""
    if not reason.strip():
        raise Problem(status_code=400, slug="reason-required", detail="A reason is required.")
    if decision not in PharmacistReview.Decision.values:
        raise Problem(status_code=400, slug="bad-decision", detail="Decide approved or rejected.")
    if not staff_can_decide(pharmacist):
        raise Problem(
            status_code=403,
            slug="not-a-registered-pharmacist",
            detail="Only a pharmacist with a recorded professional registration may decide.",
        )
    with transaction.atomic():
        review = PharmacistReview.objects.create(
            prescription_id=prescription_id,
            pharmacist=pharmacist,
            decision=decision,
            reason=reason.strip(),
        )
        target = Status.APPROVED if decision == PharmacistReview.Decision.APPROVED else Status.REJECTED
        moved = prescription_transition(
            prescription_id=prescription_id,
            to=target,
            from_statuses=frozenset({Status.AWAITING_PHARMACIST}),
            event_type=f"prescription.pharmacist_{decision}",
            payload={"review_id": review.pk},
            status_reason=reason.strip() if target == Status.REJECTED else "",
            actor=f"user:{pharmacist.pk}",
        )
        if not moved:
            # Raising rolls the review back with it: a decision exists only if it took effect.
            raise Problem(
                status_code=409,
                slug="not-awaiting-pharmacist",
                detail="This prescription is not waiting for a pharmacist.",
            )
    return review


def has_pharmacist_approval(*, prescription_id: int) -> bool:
    return PharmacistReview.objects.filter(
        prescription_id=prescription_id, decision=PharmacistReview.Decision.APPROVED
    ).exists()


def prescription_cancel(
    *, clinic: Clinic | None, prescription_id: int, reason: str, actor: str = ""
) -> Prescription:
    """Cancel a prescription not yet with the pharmacy. `clinic=None` is staff acting."""
    scope = Prescription.objects.all() if clinic is None else Prescription.objects.filter(clinic=clinic)
    current = scope.filter(pk=prescription_id).values_list("status", flat=True).first()
    if current is None:
        raise Problem(status_code=404, slug="not-found", detail="No such prescription.")
    moved = prescription_transition(
        prescription_id=prescription_id,
        to=Status.CANCELLED,
        from_statuses=CANCELLABLE,
        event_type="prescription.cancelled",
        payload={"reason": reason},
        actor=actor,
        status_reason=reason,
    )
    if not moved:
        status = scope.filter(pk=prescription_id).values_list("status", flat=True).first()
        if status == Status.CANCELLED:
            return scope.get(pk=prescription_id)
        raise Problem(
            status_code=409,
            slug="not-cancellable",
            detail=f"A prescription that is {Status(status).label.lower()} cannot be cancelled "
            "here: it is already with the pharmacy or finished.",
        )
    return scope.get(pk=prescription_id)


# Gateway progress arrives by webhook in any order; only forward moves take effect.
PROGRESS = {
    "order.dispensed": Status.DISPENSED,
    "order.shipped": Status.SHIPPED,
    "order.delivered": Status.DELIVERED,
}


def prescription_record_acknowledged(*, prescription_id: int, order_id: str) -> bool:
    return prescription_transition(
        prescription_id=prescription_id,
        to=Status.ACKNOWLEDGED,
        event_type="prescription.acknowledged",
        payload={"order_id": order_id},
        actor="gateway",
    )


def prescription_record_dead_lettered(*, prescription_id: int, error: str) -> bool:
    return prescription_transition(
        prescription_id=prescription_id,
        to=Status.DEAD_LETTERED,
        from_statuses=frozenset({Status.APPROVED}),
        event_type="prescription.dead_lettered",
        payload={"error": error[:300]},
        actor="dispatch",
    )


def prescription_record_progress(
    *, prescription_id: int, gateway_event_type: str, tracking_number: str = ""
) -> bool:
    target = PROGRESS[gateway_event_type]
    fields = {"tracking_number": tracking_number} if tracking_number else {}
    return prescription_transition(
        prescription_id=prescription_id,
        to=target,
        event_type=f"prescription.{target}",
        payload={"tracking_number": tracking_number} if tracking_number else {},
        actor="gateway",
        **fields,
    )
