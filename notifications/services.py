"""Patient notifications for the saga's events: email (Django's backends) and SMS."""

from __future__ import annotations

import logging
from datetime import timedelta
from smtplib import SMTPException

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone

from events.models import Event
from events.services import RetryLater, outbox_task_enqueue
from notifications.models import Notification
from notifications.sms import SmsError, sms_backend
from prescriptions.models import Prescription

logger = logging.getLogger(__name__)

# The task that sends a staff-requested resend (notifications.tasks), owed through the outbox.
DELIVER_TASK = "notifications.tasks.notification_deliver"

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


# The events whose reason (the prescription's status reason) the patient is told.
REASONED = frozenset({"prescription.cancelled", "prescription.rejected_by_pharmacy"})


def _context(event: Event, prescription: Prescription) -> dict[str, object]:
    return {
        "prescription_id": prescription.pk,
        "given_name": prescription.patient.given_name,
        "tracking_number": event.payload.get("tracking_number", "") or prescription.tracking_number,
        # Kept encrypted on the prescription, never in the event.
        "reason": prescription.status_reason if event.type in REASONED else "",
    }


def notification_send_for_event(*, event_id: int, event: Event | None = None) -> list[Notification]:
    """Consumer of the events in KINDS: email and/or SMS the patient, once per channel.
    `event` is that event when the caller has already read it."""
    if event is None or event.pk != event_id:
        event = Event.objects.filter(pk=event_id).first()
    if event is None or event.aggregate_type != "prescription" or event.type not in KINDS:
        return []
    prescription = Prescription.objects.select_related("patient").filter(pk=event.aggregate_id).first()
    if prescription is None:
        return []
    patient = prescription.patient
    context = _context(event, prescription)
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
    return _deliver(notification, context, to)


def _deliver(notification: Notification, context: dict[str, object], to: str) -> Notification:
    """Send a claimed (status sending) notification and record how it went."""
    channel, kind = notification.channel, notification.kind
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
            sms_backend().send(to=to, body=body, patient_id=notification.patient_id)
    except (SMTPException, OSError, SmsError) as error:
        Notification.objects.filter(pk=notification.pk).update(
            status=Notification.Status.FAILED, error=type(error).__name__
        )
        logger.warning("notification %s failed: %s", notification.pk, type(error).__name__)
        notification.status = Notification.Status.FAILED
        return notification
    Notification.objects.filter(pk=notification.pk).update(
        status=Notification.Status.SENT, sent_at=timezone.now()
    )
    notification.status = Notification.Status.SENT
    return notification


# --- Staff resends (the support console) -------------------------------------------------------


class NotificationNotResendable(Exception):
    """Only a notification that was sent or failed may be sent again (not one still going)."""


def notification_resend(*, notification_id: int, actor: str) -> Notification:
    """Queue the same message again, to the patient's current address on that channel.

    The resend is its own row (the original stays as it was) and is sent by a task after
    commit, which claims it first: a redelivered task cannot send it twice.
    """
    original = Notification.objects.filter(pk=notification_id).first()
    if original is None or original.status not in (Notification.Status.SENT, Notification.Status.FAILED):
        raise NotificationNotResendable(
            "Only a notification that was sent or failed can be sent again; this one is still going."
        )
    with transaction.atomic():
        resend = Notification.objects.create(
            event_id=original.event_id,
            patient_id=original.patient_id,
            prescription_id=original.prescription_id,
            channel=original.channel,
            kind=original.kind,
            status=Notification.Status.QUEUED,
            resend_of=original,
            requested_by=actor[:120],
        )
        outbox_task_enqueue(task=DELIVER_TASK, args=[resend.pk])
    return resend


def notification_deliver(*, notification_id: int) -> str:
    """Send a queued resend: claimed queued → sending first, so a repeat of the task while a run
    holds the claim sends nothing; a claim older than the owed task's lease
    (OUTBOX_TASK_LEASE_SECONDS, above the task's hard time limit) belongs to a run that died
    with its worker, and is taken over. Raises RetryLater while another run holds the claim,
    so the work stays owed until the claim is over."""
    now = timezone.now()
    lease = timedelta(seconds=settings.OUTBOX_TASK_LEASE_SECONDS)
    resends = Notification.objects.filter(pk=notification_id, resend_of__isnull=False)
    claimed = resends.filter(
        Q(status=Notification.Status.QUEUED)
        | Q(status=Notification.Status.SENDING, claimed_at__lt=now - lease)
        | Q(status=Notification.Status.SENDING, claimed_at__isnull=True)
    ).update(status=Notification.Status.SENDING, claimed_at=now)
    if claimed != 1:
        held = resends.filter(status=Notification.Status.SENDING).values_list("claimed_at", flat=True).first()
        if held is not None:
            raise RetryLater((held + lease - now).total_seconds() + 1, "claimed by another run")
        return "not-queued"
    notification = Notification.objects.select_related("event").get(pk=notification_id)
    prescription = Prescription.objects.select_related("patient").get(pk=notification.prescription_id)
    patient = prescription.patient
    to = patient.email if notification.channel == Notification.Channel.EMAIL else patient.phone
    if not to:
        Notification.objects.filter(pk=notification_id).update(
            status=Notification.Status.FAILED, error="no address on file"
        )
        return "failed"
    return _deliver(notification, _context(notification.event, prescription), to).status
