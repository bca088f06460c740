"""Reads for the back office: the patient page, patient search, each role's "my work" counts.

The patient page is read in a fixed number of queries however many prescriptions the patient
has (its test holds it to that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, Q, QuerySet

from billing.models import Payment, Refund
from events.models import Event, WebhookDelivery
from events.services import events_of
from notifications.models import Notification
from patients import phi
from patients.models import Patient
from prescriptions.models import Prescription
from prescriptions.plain_status import PlainStatus, plain_status
from support.models import Enquiry, SupportAction
from support.services import staff_clinics

ACTIONS_SHOWN = 20


def patients_in_scope(*, user: User) -> QuerySet[Patient]:
    patients = Patient.objects.select_related("clinic")
    if user.is_superuser:
        return patients
    return patients.filter(clinic__in=staff_clinics(user=user))


def enquiries_in_scope(*, user: User) -> QuerySet[Enquiry]:
    enquiries = Enquiry.objects.all()
    if user.is_superuser:
        return enquiries
    return enquiries.filter(clinic__in=staff_clinics(user=user))


@dataclass(frozen=True)
class PatientMatch:
    patient_id: int
    clinic: str
    prescriptions: int
    open_enquiries: int


def patient_search(*, user: User, term: str) -> list[PatientMatch]:
    """Exact matches only: NHS number, email, phone, "Family-name YYYY-MM-DD" (blind indexes),
    a prescription id ("#123" or "123") or a tracking number. Shows no identifier."""
    term = term.strip()
    if not term:
        return []
    identifiers = Q()
    for column, digest in phi.search_indexes(term):
        identifiers |= Q(**{column: digest})
    reference = term.lstrip("#")
    prescriptions = Q(tracking_number=term) if len(term) <= 60 else Q(pk__in=[])
    if reference.isdigit() and len(reference) < 12:
        prescriptions |= Q(pk=int(reference))
    # Two index lookups: an OR across the join to prescriptions would read every patient.
    by_prescription = Q(
        pk__in=list(Prescription.objects.filter(prescriptions).values_list("patient_id", flat=True)[:20])
    )
    matches = (
        patients_in_scope(user=user)
        .filter(identifiers | by_prescription if identifiers else by_prescription)
        .annotate(
            prescription_count=Count("prescriptions", distinct=True),
            open_enquiry_count=Count(
                "enquiries", filter=~Q(enquiries__status=Enquiry.Status.RESOLVED), distinct=True
            ),
        )
        .order_by("-id")[:20]
    )
    return [
        PatientMatch(
            patient_id=patient.pk,
            clinic=patient.clinic.name,
            prescriptions=patient.prescription_count,
            open_enquiries=patient.open_enquiry_count,
        )
        for patient in matches
    ]


@dataclass
class PrescriptionView:
    prescription: Prescription
    status: PlainStatus
    timeline: list[Event]
    payments: list[Payment] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    webhook_deliveries: list[WebhookDelivery] = field(default_factory=list)

    @property
    def latest_webhook_delivery(self) -> WebhookDelivery | None:
        return max(self.webhook_deliveries, key=lambda delivery: delivery.sequence, default=None)


@dataclass
class PatientPage:
    patient: Patient
    prescriptions: list[PrescriptionView]
    enquiries: list[Enquiry]
    actions: list[SupportAction]


def patient_page(*, patient: Patient) -> PatientPage:
    prescriptions = list(
        Prescription.objects.filter(patient=patient).prefetch_related("items__medication").order_by("-id")
    )
    ids = [prescription.pk for prescription in prescriptions]
    events = events_of(aggregate_type="prescription", aggregate_ids=ids)
    views = {
        prescription.pk: PrescriptionView(
            prescription=prescription,
            status=plain_status(prescription=prescription, events=events[prescription.pk], for_patient=False),
            timeline=events[prescription.pk],
        )
        for prescription in prescriptions
    }
    for payment in Payment.objects.filter(prescription_id__in=ids).order_by("id"):
        views[payment.prescription_id].payments.append(payment)
    for refund in (
        Refund.objects.filter(payment__prescription_id__in=ids).select_related("payment").order_by("id")
    ):
        views[refund.payment.prescription_id].refunds.append(refund)
    for notification in Notification.objects.filter(patient=patient, prescription_id__in=ids).order_by("id"):
        views[notification.prescription_id].notifications.append(notification)
    for delivery in WebhookDelivery.objects.filter(
        aggregate_id__in=ids, endpoint__clinic_id=patient.clinic_id
    ):
        views[delivery.aggregate_id].webhook_deliveries.append(delivery)
    enquiries = list(
        Enquiry.objects.filter(patient=patient)
        .select_related("assignee", "prescription")
        .prefetch_related("notes__author")
        .order_by("status", "due_at")
    )
    actions = list(
        SupportAction.objects.filter(patient=patient)
        .select_related("staff_user")
        .order_by("-id")[:ACTIONS_SHOWN]
    )
    return PatientPage(
        patient=patient,
        prescriptions=[views[prescription_id] for prescription_id in ids],
        enquiries=enquiries,
        actions=actions,
    )


def enquiry_counts(*, user: User, now: Any) -> dict[str, int]:
    unresolved = ~Q(status=Enquiry.Status.RESOLVED)
    return enquiries_in_scope(user=user).aggregate(
        open=Count("id", filter=Q(status=Enquiry.Status.OPEN)),
        overdue=Count("id", filter=unresolved & Q(due_at__lt=now)),
        mine=Count("id", filter=unresolved & Q(assignee=user)),
        escalated=Count("id", filter=Q(status=Enquiry.Status.ESCALATED)),
    )
