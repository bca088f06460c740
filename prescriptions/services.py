"""Prescription operations: the only code that changes a prescription's state.

Every change is a conditional UPDATE guarded by the states it may come from, and records an
event in the same transaction. A guard that matches no row means the change already
happened (a redelivered task, a duplicate webhook) and is a quiet no-op.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import date, datetime
from typing import Any, cast

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from audit.services import audit_entry_of_created
from common import rows
from common.errors import Conflict, InvalidInput, NotAllowed, NotFound
from events.models import Event
from events.services import EventDraft, event_record
from patients.models import Clinic, Patient
from patients.services import patient_record_clinical_context
from prescriptions import checks
from prescriptions.checks.cd_law_gb import VALIDITY_RULES, supply_window
from prescriptions.checks.validity import appropriate_date, supply_from, window_gb, window_us
from prescriptions.models import (
    Funding,
    LinkKind,
    OffFormularyItem,
    PharmacistReview,
    Prescriber,
    Prescription,
    PrescriptionItem,
    StateValidityLimit,
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
    # Approved goes to billing; approved → paid directly covers a payment webhook that lands
    # before the intent is recorded here.
    Status.APPROVED: frozenset({Status.AWAITING_PAYMENT, Status.PAID, Status.NHS_FUNDED, Status.CANCELLED}),
    Status.AWAITING_PAYMENT: frozenset({Status.PAID, Status.PAYMENT_FAILED, Status.CANCELLED}),
    Status.PAYMENT_FAILED: frozenset({Status.PAID, Status.CANCELLED}),
    # Paid (private, via Stripe) or NHS-funded, then dispatch.
    Status.PAID: frozenset({Status.ACKNOWLEDGED, Status.DEAD_LETTERED, Status.CANCELLED}),
    Status.NHS_FUNDED: frozenset({Status.ACKNOWLEDGED, Status.DEAD_LETTERED, Status.CANCELLED}),
    Status.DEAD_LETTERED: frozenset({Status.ACKNOWLEDGED, Status.CANCELLED}),
    # An acknowledged order ends cancelled only once the gateway confirmed the cancellation
    # (pharmacy.services.gateway_cancellation_send), or rejected by the pharmacy.
    Status.ACKNOWLEDGED: frozenset(
        {Status.DISPENSED, Status.SHIPPED, Status.DELIVERED, Status.CANCELLED, Status.REJECTED_BY_PHARMACY}
    ),
    Status.DISPENSED: frozenset({Status.SHIPPED, Status.DELIVERED}),
    Status.SHIPPED: frozenset({Status.DELIVERED}),
    Status.DELIVERED: frozenset(),
    Status.REJECTED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.REJECTED_BY_PHARMACY: frozenset(),
}
CANCELLABLE = frozenset(
    {
        Status.RECEIVED,
        Status.AWAITING_PHARMACIST,
        Status.APPROVED,
        Status.DEAD_LETTERED,
        # Cancelling these is compensated by billing (intent cancel or refund).
        Status.AWAITING_PAYMENT,
        Status.PAYMENT_FAILED,
        Status.PAID,
        Status.NHS_FUNDED,
    }
)


def sources_of(target: str) -> list[str]:
    return [source for source, targets in TRANSITIONS.items() if target in targets]


# Lock the row in the states it may leave, move it, and hand back the status it left and its
# clinic (for the event) in one round trip. The FOR UPDATE in the subquery re-reads a row a
# concurrent transaction changed once that one commits, so the guard and `from` see its status.
_TRANSITION_SQL = """
UPDATE prescriptions_prescription AS p SET {assignments}
FROM (SELECT id, status, clinic_id FROM prescriptions_prescription
      WHERE id = %s AND status = ANY(%s) FOR UPDATE) AS old
WHERE p.id = old.id
RETURNING old.status, old.clinic_id
"""


def _transition_columns(fields: dict[str, Any], connection: Any) -> tuple[str, list[Any]]:
    """The SET list and its parameters for `fields` (each prepared by its field, so an
    encrypted one is encrypted and a JSON one adapted, as QuerySet.update does)."""
    assignments: list[str] = []
    params: list[Any] = []
    for name, value in fields.items():
        field = Prescription._meta.get_field(name)
        assignments.append(f'"{field.column}" = %s')  # type: ignore[union-attr]  # a concrete field
        params.append(field.get_db_prep_save(value, connection))  # type: ignore[union-attr]  # as above
    return ", ".join(assignments), params


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
    """Move a prescription to `to` if it is in one of `from_statuses`; True if it moved.

    Joins the caller's transaction without a savepoint of its own: no caller goes on in that
    transaction after a failed transition, so its writes go or stay with the caller's.
    """
    allowed = set(sources_of(to))
    if from_statuses is not None:
        allowed &= set(from_statuses)
    if not allowed:
        return False
    with transaction.atomic(savepoint=False):
        connection = transaction.get_connection()
        assignments, params = _transition_columns(
            {"status": to, "updated_at": timezone.now(), **fields}, connection
        )
        with rows.planned_cursor() as cursor:
            cursor.execute(
                _TRANSITION_SQL.format(assignments=assignments),
                [*params, prescription_id, sorted(allowed)],
            )
            previous = cursor.fetchone()
        if previous is None:
            return False
        previous_status, clinic_id = previous
        event_record(
            aggregate_type="prescription",
            aggregate_id=prescription_id,
            clinic_id=clinic_id,
            type=event_type,
            actor=actor,
            payload={"from": previous_status, "to": to, **(payload or {})},
        )
    return True


# No savepoint of its own inside a caller's transaction (the clinic API's, a FHIR message's):
# nobody goes on after a failed create, so its writes go or stay with the caller's.
@transaction.atomic(savepoint=False)
def prescription_create(
    *,
    clinic: Clinic,
    patient: Patient,
    prescriber: Prescriber,
    items: list[dict[str, Any]],
    issued_on: date | None = None,
    note: str = "",
    repeats: int = 0,
    earliest_fill_date: date | None = None,
    start_date: date | None = None,
    clinical_justification: str = "",
    two_factor_signed_at: datetime | None = None,
    diagnoses: list[dict[str, Any]] | None = None,
    observations: list[dict[str, Any]] | None = None,
    clinical_context: dict[str, Any] | None = None,
    actor: str = "",
    funding: str = Funding.PRIVATE,
    nhs_exemption: dict[str, str] | None = None,
    repeat_interval_days: int | None = None,
    titration_of: Prescription | None = None,
    repeat_of: Prescription | None = None,
    off_formulary_items: list[dict[str, Any]] | None = None,
) -> Prescription:
    """Record a received prescription and its `prescription.received` event.

    `off_formulary_items` (FHIR intake only) are products not on the formulary, each with its
    `line` among all the items; the checks hold the prescription for a pharmacist over them.
    """
    if patient.clinic_id != clinic.pk or prescriber.clinic_id != clinic.pk:
        raise ValueError("patient and prescriber must belong to the prescribing clinic")
    # A titration step or repeat issue follows an earlier prescription.
    previous = titration_of or repeat_of
    if previous is not None and previous.patient_id != patient.pk:
        raise ValueError("a titration step or repeat follows the same patient's prescription")
    prescription = Prescription(
        clinic=clinic,
        patient=patient,
        prescriber=prescriber,
        issued_on=issued_on or timezone.localdate(),
        note=note,
        repeats=repeats,
        earliest_fill_date=earliest_fill_date,
        start_date=start_date,
        clinical_justification=clinical_justification,
        two_factor_signed_at=two_factor_signed_at,
        funding=funding,
        nhs_exemption_category=(nhs_exemption or {}).get("category", ""),
        nhs_exemption_evidence=(nhs_exemption or {}).get("evidence", ""),
        previous=previous,
        link_kind=LinkKind.TITRATION if titration_of else LinkKind.REPEAT if repeat_of else "",
        repeat_interval_days=repeat_interval_days,
    )
    created_items = [PrescriptionItem(prescription=prescription, **item) for item in items]
    received = _prescription_insert(
        prescription,
        created_items,
        actor=actor,
        payload={
            "to": Status.RECEIVED,
            "items": len(items) + len(off_formulary_items or []),
            **({"off_formulary_items": len(off_formulary_items)} if off_formulary_items else {}),
            "funding": funding,
            **({"previous": previous.pk, "link_kind": prescription.link_kind} if previous else {}),
        },
    )
    patient_record_clinical_context(
        patient=patient, diagnoses=diagnoses, observations=observations, clinical_context=clinical_context
    )
    OffFormularyItem.objects.bulk_create(
        OffFormularyItem(prescription=prescription, **item) for item in off_formulary_items or []
    )
    _as_read(prescription, items=created_items, events=[received])
    return prescription


def _prescription_insert(
    prescription: Prescription, items: list[PrescriptionItem], *, actor: str, payload: dict[str, Any]
) -> Event:
    """Write a new prescription; then, in one more statement, its audit entry, its
    `prescription.received` event with the outbox row, and its items. The ORM took five
    statements and built each at length. (The items cannot join the first statement: the
    tenant's row-level policy on items reads the prescription, and a statement does not see
    what its own CTEs wrote.)"""
    with rows.planned_cursor() as cursor:
        cursor.execute(
            f'{rows.insert_sql(Prescription, with_pk=False)} RETURNING "id"',
            rows.insert_values(prescription, with_pk=False),
        )
        prescription.pk = cursor.fetchone()[0]
        rows.mark_saved(prescription)
        received = EventDraft(
            aggregate_type="prescription",
            aggregate_id=prescription.pk,
            clinic_id=prescription.clinic_id,
            type="prescription.received",
            actor=actor,
            payload=payload,
        )
        ctes, values = [received.sql], list(received.params)
        audit_entry = audit_entry_of_created(prescription)
        if audit_entry is not None:
            ctes.append(f"audit AS ({rows.insert_sql(type(audit_entry), with_pk=False)})")
            values += rows.insert_values(audit_entry, with_pk=False)
        if items:
            ctes.append(
                f'item AS ({rows.insert_sql(PrescriptionItem, rows=len(items), with_pk=False)} RETURNING "id")'
            )
            for item in items:
                item.prescription_id = prescription.pk
                values += rows.insert_values(item, with_pk=False)
        item_ids = "ARRAY(SELECT id FROM item ORDER BY id)" if items else "ARRAY[]::bigint[]"
        cursor.execute(
            f"WITH {', '.join(ctes)} SELECT {received.returning}, {item_ids} FROM new_event", values
        )
        event_id, sequence, idle, item_ids_written = cursor.fetchone()
    for item, item_id in zip(items, item_ids_written, strict=True):
        item.pk = item_id
        rows.mark_saved(item)
    return received.recorded(event_id, sequence, idle)


def _as_read(prescription: Prescription, *, items: list[PrescriptionItem], events: list[Event]) -> None:
    """Hand a new prescription back as selectors.prescription_list reads it (items with their
    medications, no payment) with its timeline, from what was just written: the intake answers
    without reading its own rows back."""
    Prescription.payment.related.set_cached_value(prescription, None)
    cached_items = prescription.items.all()
    cached_items._result_cache = items
    cached_items._prefetch_done = True  # type: ignore[attr-defined]  # Django's prefetch cache, filled by hand
    prescription._prefetched_objects_cache = {"items": cached_items}  # type: ignore[attr-defined]  # as above
    prescription.timeline_events = events  # type: ignore[attr-defined]  # read by the detail serializer


def prescription_run_checks(*, prescription_id: int) -> str | None:
    """Run the clinical checks on a received prescription; returns the new status."""
    context = checks.context_load(prescription_id)
    if context is None:
        return None
    results = checks.context_run(context)
    target = checks.outcome(results)
    stored = [result.as_dict() for result in results]
    reasons = "; ".join(result.message for result in results if result.severity == checks.Severity.BLOCK)
    moved = prescription_transition(
        prescription_id=prescription_id,
        to=target,
        from_statuses=frozenset({Status.RECEIVED}),
        event_type=f"prescription.{target}",
        # The full results travel with the event, so the clinic's webhook can show the reasons.
        payload={"checks": stored},
        check_results=stored,
        status_reason=_truncate(reasons, STATUS_REASON_LENGTH),
        actor="checks",
    )
    return target if moved else None


STATUS_REASON_LENGTH = cast(int, Prescription._meta.get_field("status_reason").max_length)  # a CharField


def _truncate(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def pharmacist_may_decide(user: User) -> bool:
    """Staff in the pharmacist role with a recorded professional registration number (the one
    rule, kept in support.services.staff_can_decide)."""
    return staff_can_decide(user)


def _refuse_approval_outside_supply_window(prescription: Prescription, today: date) -> None:
    """An expired prescription cannot be approved. One whose start date is still to come can:
    the saga holds it and sends it to the pharmacy on that day."""
    jurisdiction = prescription.clinic.jurisdiction
    schedules = {item.medication.schedule_in(jurisdiction) for item in prescription.items.all()}
    if jurisdiction == "GB" and schedules & VALIDITY_RULES:
        first, last = supply_window(appropriate_date(prescription))
        if today > last:
            raise Conflict(
                code="outside-supply-window",
                detail=f"A Schedule 2-4 controlled drug may be supplied only from {first:%Y-%m-%d} "
                f"to {last:%Y-%m-%d}; it cannot be approved today.",
            )
    if jurisdiction == "GB":
        windows = [window_gb(prescription)]
    else:
        state = (prescription.patient.region or "").strip().upper()
        limits = {
            (limit.state, limit.schedule): limit for limit in StateValidityLimit.objects.filter(state=state)
        }
        windows = [
            window for schedule in schedules if (window := window_us(prescription, schedule, limits, state))
        ]
    expired = [window for window in windows if today > window.last_day]
    if expired:
        raise Conflict(
            code="prescription-expired",
            detail=f"The prescription could be supplied until {expired[0].last_day:%Y-%m-%d} "
            f"({expired[0].rule}); it has expired and cannot be approved.",
        )


def prescription_review(
    *,
    prescription_id: int,
    pharmacist: User,
    decision: str,
    reason: str,
) -> PharmacistReview:
    """Record a pharmacist's approval or rejection and move the prescription on.

    Only a registered pharmacist may decide, never on a prescription they wrote; the decision
    is final (the table refuses UPDATE and DELETE) and takes effect only from
    awaiting_pharmacist.
    """
    if not reason.strip():
        raise InvalidInput("A reason is required.", code="reason-required")
    if decision not in PharmacistReview.Decision.values:
        raise InvalidInput("Decide approved or rejected.", code="bad-decision")
    if not pharmacist_may_decide(pharmacist):
        raise NotAllowed(
            code="not-a-registered-pharmacist",
            detail="Only staff with the pharmacist role and a recorded registration number may decide.",
        )
    prescription = (
        Prescription.objects.select_related("clinic", "prescriber", "patient")
        .prefetch_related("items__medication")
        .filter(pk=prescription_id)
        .first()
    )
    if prescription is None:
        raise NotFound("No such prescription.", code="not-found")
    if prescription.prescriber.user_id == pharmacist.pk:
        raise NotAllowed(
            code="own-prescription",
            detail="You wrote this prescription: another pharmacist must decide it.",
        )
    if decision == PharmacistReview.Decision.APPROVED:
        _refuse_approval_outside_supply_window(prescription, timezone.localdate())
        if prescription.off_formulary_items.exists():
            raise Conflict(
                code="off-formulary-item",
                detail="A product on this prescription is not on the formulary and cannot be "
                "supplied; reject it with a reason for the clinic.",
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
            payload={"review_id": review.pk, "decision": decision},
            status_reason=_truncate(reason.strip(), STATUS_REASON_LENGTH)
            if target == Status.REJECTED
            else "",
            actor=f"user:{pharmacist.pk}",
        )
        if not moved:
            # Raising rolls the review back with it: a decision exists only if it took effect.
            raise Conflict(
                code="not-awaiting-pharmacist",
                detail="This prescription is not waiting for a pharmacist.",
            )
    return review


def prescription_record_event(
    *,
    prescription_id: int,
    event_type: str,
    payload: dict[str, Any] | None = None,
    actor: str = "",
    locked_clinic_id: int | None = None,
) -> bool:
    """Record an event on a prescription without changing its status (e.g. a refund).

    Joins the caller's transaction if there is one (without a savepoint, as a transition);
    the row lock keeps the sequence ordered. A caller that has taken that lock in this
    transaction already, reading the prescription's clinic with it, passes the clinic as
    `locked_clinic_id`.
    """
    with transaction.atomic(savepoint=False):
        clinic_id = locked_clinic_id
        if clinic_id is None:
            clinic_id = (
                Prescription.objects.select_for_update()
                .filter(pk=prescription_id)
                .values_list("clinic_id", flat=True)
                .first()
            )
        if clinic_id is None:
            return False
        event_record(
            aggregate_type="prescription",
            aggregate_id=prescription_id,
            clinic_id=clinic_id,
            type=event_type,
            actor=actor,
            payload=payload or {},
        )
    return True


def prescription_hold_if_not_due(*, prescription_id: int, today: date | None = None) -> date | None:
    """If the prescription may not be supplied yet, record on its timeline that it is held and
    until when; returns that day, or None when it may be supplied now."""
    prescription = Prescription.objects.filter(pk=prescription_id).first()
    if prescription is None:
        return None
    first = supply_from(prescription)
    if first <= (today or timezone.localdate()):
        return None
    which = "earliest fill date" if first == prescription.earliest_fill_date else "start date"
    prescription_record_event(
        prescription_id=prescription_id,
        event_type="prescription.held",
        payload={
            "until": first.isoformat(),
            "reason": f"Not to be supplied before {first:%Y-%m-%d} (the prescription's {which}); "
            "it goes to the pharmacy on that day.",
        },
        actor="saga",
    )
    return first


def has_pharmacist_approval(*, prescription_id: int) -> bool:
    return PharmacistReview.objects.filter(
        prescription_id=prescription_id, decision=PharmacistReview.Decision.APPROVED
    ).exists()


class PrescriptionNotCancellable(Conflict):
    """The prescription is already with the pharmacy or finished: it cannot be cancelled here."""

    def __init__(self, detail: str, *, keeps_changes: bool = False) -> None:
        super().__init__(detail, code="not-cancellable", keeps_changes=keeps_changes)


def prescription_cancel(
    *, clinic: Clinic | None, prescription_id: int, reason: str, actor: str = ""
) -> Prescription:
    """Cancel a prescription not yet with the pharmacy. `clinic=None` is staff acting."""
    scope = Prescription.objects.all() if clinic is None else Prescription.objects.filter(clinic=clinic)
    current = scope.filter(pk=prescription_id).values_list("status", flat=True).first()
    if current is None:
        raise NotFound("No such prescription.", code="not-found")
    moved = prescription_transition(
        prescription_id=prescription_id,
        to=Status.CANCELLED,
        from_statuses=CANCELLABLE,
        event_type="prescription.cancelled",
        actor=actor,
        status_reason=reason,
    )
    if not moved:
        status = scope.filter(pk=prescription_id).values_list("status", flat=True).first()
        if status is None or status == Status.CANCELLED:
            return scope.get(pk=prescription_id)
        raise PrescriptionNotCancellable(
            f"A prescription that is {Status(status).label.lower()} cannot be cancelled "
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
        from_statuses=frozenset({Status.PAID, Status.NHS_FUNDED}),
        event_type="prescription.dead_lettered",
        payload={"error": error[:300]},
        actor="dispatch",
    )


def prescription_record_progress(
    *, prescription_id: int, gateway_event_type: str, tracking_number: str = ""
) -> bool:
    target = PROGRESS[gateway_event_type]
    fields: dict[str, Any] = {"tracking_number": tracking_number} if tracking_number else {}
    return prescription_transition(
        prescription_id=prescription_id,
        to=target,
        event_type=f"prescription.{target}",
        payload={"tracking_number": tracking_number} if tracking_number else {},
        actor="gateway",
        **fields,
    )


# --- Cancelled at the pharmacy, rejected by the pharmacy ------------------------------------------


def prescription_record_cancelled_at_pharmacy(*, prescription_id: int, reason: str, actor: str = "") -> bool:
    """The gateway confirmed the cancellation of an acknowledged order (compensation)."""
    return prescription_transition(
        prescription_id=prescription_id,
        to=Status.CANCELLED,
        from_statuses=frozenset({Status.ACKNOWLEDGED}),
        event_type="prescription.cancelled",
        payload={"cancelled_at": "pharmacy"},
        actor=actor or "gateway",
        status_reason=_truncate(reason, STATUS_REASON_LENGTH),
    )


def prescription_record_rejected_by_pharmacy(*, prescription_id: int, reason: str) -> bool:
    return prescription_transition(
        prescription_id=prescription_id,
        to=Status.REJECTED_BY_PHARMACY,
        from_statuses=frozenset({Status.ACKNOWLEDGED}),
        event_type="prescription.rejected_by_pharmacy",
        actor="gateway",
        status_reason=_truncate(reason, STATUS_REASON_LENGTH),
    )


# --- NHS EPS identifiers ---------------------------------------------------------------------


def prescription_record_eps_identifiers(
    *, prescription_id: int, short_form_id: str, long_form_id: uuid.UUID
) -> bool:
    """Fix the prescription's EPS short-form and long-form IDs, once.

    False when it already has them (the first ones stay: every send and replay must name the
    prescription the same way). Raises IntegrityError when another prescription holds the
    short-form ID; the caller draws a new one.
    """
    # One UPDATE, planned once per connection (every GB prescription's first send runs it): in
    # autocommit it is its own transaction; inside a caller's, a savepoint keeps a clash from
    # spoiling it.
    inside = transaction.get_connection().in_atomic_block
    with transaction.atomic() if inside else contextlib.nullcontext(), rows.planned_cursor() as cursor:
        cursor.execute(_EPS_IDENTIFIERS_SQL, [short_form_id, long_form_id, timezone.now(), prescription_id])
        return cursor.rowcount == 1


_EPS_IDENTIFIERS_SQL = (
    f'UPDATE "{Prescription._meta.db_table}"'
    " SET eps_prescription_id = %s::text, eps_prescription_uuid = %s::uuid, updated_at = %s::timestamptz"
    " WHERE id = %s::bigint AND eps_prescription_id = ''"
)
