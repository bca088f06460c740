"""Patient notifications: email and SMS for the saga's events, never twice, never a number in a log."""

from __future__ import annotations

import logging

import pytest
from django.core import mail

from events.models import Event
from notifications import services
from notifications.models import Notification
from notifications.sms import SmsError
from prescriptions import services as prescriptions
from prescriptions.models import Status
from tests.prescriptions.factories import scenario

pytestmark = pytest.mark.django_db

SENT: list[dict[str, object]] = []


class RecordingSmsBackend:
    """An SMS provider at the edge of the machine: records what would go out."""

    def send(self, *, to: str, body: str, patient_id: int) -> None:
        SENT.append({"to": to, "body": body, "patient_id": patient_id})


class FailingSmsBackend:
    def send(self, *, to: str, body: str, patient_id: int) -> None:
        raise SmsError("provider down")


@pytest.fixture(autouse=True)
def sms(settings):  # type: ignore[no-untyped-def]
    settings.SMS_BACKEND = "tests.notifications.test_notifications.RecordingSmsBackend"
    SENT.clear()
    return SENT


@pytest.fixture
def prescription(formulary):  # type: ignore[no-untyped-def]
    return scenario(patient={"email": "ada@example.test", "phone": "+447700900123"})


def shipped(prescription) -> Event:  # type: ignore[no-untyped-def]
    prescriptions.prescription_transition(
        prescription_id=prescription.pk,
        to=Status.SHIPPED,
        from_statuses=None,
        event_type="prescription.shipped",
        payload={"tracking_number": "TRK123"},
    )
    return Event.objects.get(aggregate_id=prescription.pk, type="prescription.shipped")


def force_acknowledged(prescription) -> None:  # type: ignore[no-untyped-def]
    from prescriptions.models import Prescription

    Prescription.objects.filter(pk=prescription.pk).update(status=Status.ACKNOWLEDGED)


def test_shipping_emails_and_texts_the_patient_the_tracking_number(prescription, sms):
    force_acknowledged(prescription)
    event = shipped(prescription)

    sent = services.notification_send_for_event(event_id=event.pk)

    assert sorted((n.channel, n.kind, n.status) for n in sent) == [
        ("email", "shipped", "sent"),
        ("sms", "shipped", "sent"),
    ]
    (email,) = mail.outbox
    assert email.to == ["ada@example.test"]
    assert email.subject == f"Your prescription #{prescription.pk} has shipped"
    assert "Tracking number: TRK123." in email.body
    assert sms == [
        {
            "to": "+447700900123",
            "body": f"Scriptline: prescription #{prescription.pk} has shipped. Tracking: TRK123",
            "patient_id": prescription.patient_id,
        }
    ]


def test_a_redelivered_event_sends_nothing_more(prescription, sms):
    force_acknowledged(prescription)
    event = shipped(prescription)
    services.notification_send_for_event(event_id=event.pk)

    again = services.notification_send_for_event(event_id=event.pk)

    assert again == []
    assert len(mail.outbox) == 1
    assert len(sms) == 1
    assert Notification.objects.count() == 2


def test_a_cancellation_tells_the_patient_the_reason(prescription):
    prescriptions.prescription_cancel(clinic=None, prescription_id=prescription.pk, reason="Dose changed")
    event = Event.objects.get(aggregate_id=prescription.pk, type="prescription.cancelled")

    services.notification_send_for_event(event_id=event.pk)

    assert "Reason: Dose changed." in mail.outbox[0].body


def test_events_patients_do_not_hear_about_send_nothing(prescription, sms):
    received = Event.objects.get(aggregate_id=prescription.pk, type="prescription.received")
    assert services.notification_send_for_event(event_id=received.pk) == []
    assert mail.outbox == []
    assert sms == []
    assert not Notification.objects.exists()


def test_a_patient_without_a_phone_gets_only_email(formulary, sms):
    prescription = scenario(patient={"email": "bo@example.test", "phone": ""})
    force_acknowledged(prescription)
    sent = services.notification_send_for_event(event_id=shipped(prescription).pk)
    assert [n.channel for n in sent] == ["email"]
    assert sms == []


def test_a_failed_sms_is_recorded_and_not_retried(prescription, settings, sms):
    settings.SMS_BACKEND = "tests.notifications.test_notifications.FailingSmsBackend"
    force_acknowledged(prescription)
    event = shipped(prescription)

    services.notification_send_for_event(event_id=event.pk)
    services.notification_send_for_event(event_id=event.pk)

    failed = Notification.objects.get(channel="sms")
    assert (failed.status, failed.error) == ("failed", "SmsError")
    assert Notification.objects.get(channel="email").status == "sent"
    assert len(mail.outbox) == 1


def test_the_console_sms_backend_logs_the_patient_id_and_never_the_number(prescription, settings, caplog):
    settings.SMS_BACKEND = "notifications.sms.ConsoleSmsBackend"
    force_acknowledged(prescription)
    with caplog.at_level(logging.INFO):
        services.notification_send_for_event(event_id=shipped(prescription).pk)
    messages = [record.getMessage() for record in caplog.records]
    assert f"SMS sent to patient #{prescription.patient_id}" in messages
    assert not any("+447700900123" in message or "7700900123" in message for message in messages)


def test_a_payment_problem_asks_the_patient_to_contact_the_clinic(prescription):
    prescriptions.prescription_record_event(
        prescription_id=prescription.pk, event_type="prescription.payment_error"
    )
    event = Event.objects.get(aggregate_id=prescription.pk, type="prescription.payment_error")
    services.notification_send_for_event(event_id=event.pk)
    assert mail.outbox[0].subject == f"We could not take payment for prescription #{prescription.pk}"
