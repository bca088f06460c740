"""The support console's writes: enquiries, the identity check, and the actions support takes
for a patient (each with a required reason, recorded as an append-only SupportAction).

Every action is checked against the staff member's clinics (support staff work only for the
clinics assigned to them), and goes through the owning app's service: a resend through
notifications or the clinic-webhook module; a cancellation goes through the saga's cancel-with-compensation
path (called by support.views, the entry point) and is recorded here.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from events.models import WebhookDelivery
from events.webhooks import webhook_delivery_resend
from notifications.models import Notification
from notifications.services import NotificationNotResendable, notification_resend
from patients.models import Patient
from prescriptions.models import Prescription
from support.models import Enquiry, EnquiryNote, SupportAction
from support.services import staff_clinics

Kind = SupportAction.Kind


class SupportActionRefused(Exception):
    """The action cannot be taken as asked; `detail` says why, in words for the staff member."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _actor(user: User) -> str:
    return f"user:{user.pk}"


def _reason_required(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise SupportActionRefused("A reason is required.")
    return reason


def _within_scope(user: User, clinic_id: int) -> None:
    if not user.is_superuser and not staff_clinics(user=user).filter(pk=clinic_id).exists():
        raise SupportActionRefused("That patient belongs to a clinic you do not work for.")


def _record(
    *,
    user: User,
    kind: str,
    patient: Patient,
    reason: str = "",
    outcome: str = "",
    prescription_id: int | None = None,
    enquiry_id: int | None = None,
) -> SupportAction:
    return SupportAction.objects.create(
        clinic_id=patient.clinic_id,
        patient=patient,
        prescription_id=prescription_id,
        enquiry_id=enquiry_id,
        staff_user=user,
        kind=kind,
        reason=reason,
        outcome=outcome[:300],
    )


# --- Enquiries ----------------------------------------------------------------------------------


def enquiry_due_at(*, category: str, opened_at: datetime) -> datetime:
    return opened_at + timedelta(hours=settings.SUPPORT_ENQUIRY_SLA_HOURS[category])


def enquiry_open(
    *,
    patient_id: int,
    channel: str,
    category: str,
    staff_user: User,
    note: str = "",
    prescription_id: int | None = None,
    assignee_id: int | None = None,
) -> Enquiry:
    """Open an enquiry, due after its category's SLA; the first note (if any) goes with it."""
    patient = Patient.objects.get(pk=patient_id)
    _within_scope(staff_user, patient.clinic_id)
    if (
        prescription_id is not None
        and not Prescription.objects.filter(pk=prescription_id, patient_id=patient_id).exists()
    ):
        raise SupportActionRefused("That prescription is not this patient's.")
    if category not in Enquiry.Category.values or channel not in Enquiry.Channel.values:
        raise SupportActionRefused("Choose a channel and a category from the lists.")
    now = timezone.now()
    with transaction.atomic():
        enquiry = Enquiry.objects.create(
            clinic_id=patient.clinic_id,
            patient=patient,
            prescription_id=prescription_id,
            channel=channel,
            category=category,
            due_at=enquiry_due_at(category=category, opened_at=now),
            assignee_id=assignee_id,
            created_by=staff_user,
        )
        if note.strip():
            EnquiryNote.objects.create(enquiry=enquiry, author=staff_user, body=note.strip())
    return enquiry


def enquiry_add_note(*, enquiry_id: int, staff_user: User, body: str) -> EnquiryNote:
    body = _reason_required(body)
    enquiry = Enquiry.objects.select_related("patient").get(pk=enquiry_id)
    _within_scope(staff_user, enquiry.clinic_id)
    with transaction.atomic():
        note = EnquiryNote.objects.create(enquiry=enquiry, author=staff_user, body=body)
        _record(
            user=staff_user,
            kind=Kind.ADD_NOTE,
            patient=enquiry.patient,
            reason=body,
            outcome=f"note #{note.pk}",
            prescription_id=enquiry.prescription_id,
            enquiry_id=enquiry.pk,
        )
    return note


def enquiry_escalate(
    *, enquiry_id: int, staff_user: User, reason: str, pharmacist_id: int | None = None
) -> bool:
    """Hand an open enquiry to a pharmacist (side effects, clinical questions); False if it
    was not open."""
    reason = _reason_required(reason)
    enquiry = Enquiry.objects.select_related("patient").get(pk=enquiry_id)
    _within_scope(staff_user, enquiry.clinic_id)
    with transaction.atomic():
        moved = Enquiry.objects.filter(pk=enquiry_id, status=Enquiry.Status.OPEN).update(
            status=Enquiry.Status.ESCALATED, escalated_at=timezone.now(), assignee_id=pharmacist_id
        )
        _record(
            user=staff_user,
            kind=Kind.ESCALATE,
            patient=enquiry.patient,
            reason=reason,
            outcome="escalated" if moved else f"not escalated: it was {enquiry.get_status_display()}",
            prescription_id=enquiry.prescription_id,
            enquiry_id=enquiry.pk,
        )
        if moved:
            EnquiryNote.objects.create(enquiry=enquiry, author=staff_user, body=f"Escalated: {reason}")
    return bool(moved)


def enquiry_resolve(*, enquiry_id: int, staff_user: User, resolution: str) -> bool:
    resolution = _reason_required(resolution)
    enquiry = Enquiry.objects.select_related("patient").get(pk=enquiry_id)
    _within_scope(staff_user, enquiry.clinic_id)
    with transaction.atomic():
        moved = (
            Enquiry.objects.filter(pk=enquiry_id)
            .exclude(status=Enquiry.Status.RESOLVED)
            .update(status=Enquiry.Status.RESOLVED, resolved_at=timezone.now())
        )
        if moved:
            # The encrypted field is written through the model, never through update().
            enquiry.resolution = resolution
            enquiry.save(update_fields=["resolution"])
        _record(
            user=staff_user,
            kind=Kind.RESOLVE,
            patient=enquiry.patient,
            reason=resolution,
            outcome="resolved" if moved else "already resolved",
            prescription_id=enquiry.prescription_id,
            enquiry_id=enquiry.pk,
        )
    return bool(moved)


def enquiry_assign(*, enquiry_id: int, staff_user: User, assignee_id: int | None) -> None:
    enquiry = Enquiry.objects.get(pk=enquiry_id)
    _within_scope(staff_user, enquiry.clinic_id)
    Enquiry.objects.filter(pk=enquiry_id).update(assignee_id=assignee_id)


# --- The identity check -------------------------------------------------------------------------


def _normalised(text: str) -> str:
    return "".join(text.casefold().split())


def _attempts_key(user: User, patient_id: int) -> str:
    return f"support:identity-failures:{user.pk}:{patient_id}"


def identity_check(
    *, patient_id: int, staff_user: User, family_name: str, birth_date: date, postal_code: str
) -> bool:
    """Does the caller know the patient's family name, date of birth and postcode?

    Each attempt is recorded (never what was typed). After SUPPORT_IDENTITY_CHECK_ATTEMPTS
    failures on one patient the staff member is refused for an hour, so the check cannot be
    used to guess a patient's details.
    """
    patient = Patient.objects.get(pk=patient_id)
    _within_scope(staff_user, patient.clinic_id)
    key = _attempts_key(staff_user, patient_id)
    if cache.get(key, 0) >= settings.SUPPORT_IDENTITY_CHECK_ATTEMPTS:
        raise SupportActionRefused("Too many failed identity checks on this patient: try again in an hour.")
    passed = (
        _normalised(family_name) == _normalised(patient.family_name)
        and birth_date == patient.birth_date
        and bool(patient.postal_code)
        and _normalised(postal_code) == _normalised(patient.postal_code)
    )
    if passed:
        cache.delete(key)
    else:
        cache.add(key, 0, timeout=3600)
        cache.incr(key)
    _record(
        user=staff_user, kind=Kind.IDENTITY_CHECK, patient=patient, outcome="passed" if passed else "failed"
    )
    return passed


# --- Actions on a prescription ------------------------------------------------------------------


def _prescription_in_scope(prescription_id: int, user: User) -> Prescription:
    prescription = Prescription.objects.select_related("patient").filter(pk=prescription_id).first()
    if prescription is None:
        raise SupportActionRefused("No such prescription.")
    _within_scope(user, prescription.clinic_id)
    return prescription


def support_notification_resend(
    *, notification_id: int, staff_user: User, reason: str, enquiry_id: int | None = None
) -> Notification:
    reason = _reason_required(reason)
    original = Notification.objects.filter(pk=notification_id).first()
    if original is None:
        raise SupportActionRefused("No such notification.")
    prescription = _prescription_in_scope(original.prescription_id, staff_user)
    try:
        resend = notification_resend(notification_id=notification_id, actor=_actor(staff_user))
    except NotificationNotResendable as refused:
        raise SupportActionRefused(str(refused)) from refused
    _record(
        user=staff_user,
        kind=Kind.RESEND_NOTIFICATION,
        patient=prescription.patient,
        reason=reason,
        outcome=f"{original.kind} by {original.channel} queued again as notification #{resend.pk}",
        prescription_id=prescription.pk,
        enquiry_id=enquiry_id,
    )
    return resend


def support_webhook_resend(
    *, delivery_id: int, staff_user: User, reason: str, enquiry_id: int | None = None
) -> bool:
    reason = _reason_required(reason)
    delivery = WebhookDelivery.objects.filter(pk=delivery_id).first()
    if delivery is None:
        raise SupportActionRefused("No such webhook delivery.")
    prescription = _prescription_in_scope(delivery.aggregate_id, staff_user)
    resent = webhook_delivery_resend(delivery_id=delivery_id, actor=_actor(staff_user))
    _record(
        user=staff_user,
        kind=Kind.RESEND_WEBHOOK,
        patient=prescription.patient,
        reason=reason,
        outcome=f"delivery #{delivery_id} resent" if resent else f"delivery #{delivery_id} was still pending",
        prescription_id=prescription.pk,
        enquiry_id=enquiry_id,
    )
    return resent


def support_cancellation_record(
    *,
    prescription_id: int,
    staff_user: User,
    reason: str,
    outcome: str,
    enquiry_id: int | None = None,
) -> SupportAction:
    """Record a cancellation support requested (the saga's cancel-with-compensation did it:
    support.views calls saga.cancellation, then this)."""
    prescription = _prescription_in_scope(prescription_id, staff_user)
    return _record(
        user=staff_user,
        kind=Kind.REQUEST_CANCELLATION,
        patient=prescription.patient,
        reason=_reason_required(reason),
        outcome=outcome,
        prescription_id=prescription_id,
        enquiry_id=enquiry_id,
    )


def support_cancellation_check(*, prescription_id: int, staff_user: User, reason: str) -> str:
    """Before support cancels: the prescription is within the staff member's clinics and a
    reason is given; returns the reason, stripped."""
    _prescription_in_scope(prescription_id, staff_user)
    return _reason_required(reason)


def support_keys_rotate(*, batch_size: int = 500) -> int:
    """Re-encrypt enquiry and support-action text under the first PHI salt (manage.py rotate_keys).

    The support-action table is append-only except for its encrypted reason, which rotation
    rewrites (support migration 0006).
    """
    rotated = 0
    tables: tuple[tuple[type[Model], list[str]], ...] = (
        (Enquiry, ["resolution"]),
        (EnquiryNote, ["body"]),
        (SupportAction, ["reason"]),
    )
    for model, fields in tables:
        last_id = 0
        while True:
            with transaction.atomic():
                rows = list(
                    model._default_manager.select_for_update()
                    .filter(pk__gt=last_id)
                    .order_by("pk")[:batch_size]
                )
                model._default_manager.bulk_update(rows, fields)
            if not rows:
                break
            rotated += len(rows)
            last_id = rows[-1].pk
    return rotated
