"""Patient notifications for the saga's events: email (Django's backends) and SMS."""

from __future__ import annotations

import logging
from smtplib import SMTPException

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from events.models import Event
from notifications.models import Notification
from notifications.sms import SmsError, sms_backend
from prescriptions.models import Prescription

logger = logging.getLogger(__name__)

# Which events a patient hears about, and the template (templates/notifications/<kind>.*).
KINDS = {
    "prescription.acknowledged": "dispatched",
    "prescription.shipped": "shipped",
    "prescription.delivered": "delivered",
    "prescription.payment_failed": "payment_problem",
    "prescription.payment_error": "payment_problem",
    "prescription.cancelled": "cancelled",
    "prescription.rejected_by_pharmacy": "rejected_by_pharmacy",
    "prescription.refunded": "refunded",
}


def notification_send_for_event(*, event_id: int) -> list[Notification]:
    """Consumer of the events in KINDS: email and/or SMS the patient, once per channel."""
    event = Event.objects.filter(pk=event_id, aggregate_type="prescription", type__in=KINDS).first()
    if event is None:
        return []
    prescription = Prescription.objects.select_related("patient").filter(pk=event.aggregate_id).first()
    if prescription is None:
        return []
    patient = prescription.patient
    context = {
        "prescription_id": prescription.pk,
        "given_name": patient.given_name,
        "tracking_number": event.payload.get("tracking_number", "") or prescription.tracking_number,
        "reason": event.payload.get("reason", ""),
    }
    kind = KINDS[event.type]
    sent = []
    if patient.email:
        sent.append(_send_once(event, prescription, Notification.Channel.EMAIL, kind, context, patient.email))
    if patient.phone:
        sent.append(_send_once(event, prescription, Notification.Channel.SMS, kind, context, patient.phone))
    return [notification for notification in sent if notification is not None]


def _send_once(
    event: Event, prescription: Prescription, channel: str, kind: str, context: dict[str, object], to: str
) -> Notification | None:
    try:
        with transaction.atomic():
            notification = Notification.objects.create(
                event=event,
                patient_id=prescription.patient_id,
                prescription_id=prescription.pk,
                channel=channel,
                kind=kind,
            )
    except IntegrityError:
        return None  # claimed before (a redelivery): never send twice
    try:
        if channel == Notification.Channel.EMAIL:
            send_mail(
                subject=render_to_string(f"notifications/{kind}.subject.txt", context).strip(),
                message=render_to_string(f"notifications/{kind}.email.txt", context),
                from_email=settings.NOTIFICATION_FROM_EMAIL,
                recipient_list=[to],
            )
        else:
            body = render_to_string(f"notifications/{kind}.sms.txt", context).strip()
            sms_backend().send(to=to, body=body, patient_id=prescription.patient_id)
    except (SMTPException, OSError, SmsError) as error:
        Notification.objects.filter(pk=notification.pk).update(
            status=Notification.Status.FAILED, error=type(error).__name__
        )
        logger.warning("notification %s failed: %s", notification.pk, type(error).__name__)
        return notification
    Notification.objects.filter(pk=notification.pk).update(
        status=Notification.Status.SENT, sent_at=timezone.now()
    )
    notification.status = Notification.Status.SENT
    return notification
