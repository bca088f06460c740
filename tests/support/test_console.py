"""The support console: enquiries, the identity check before a patient's details, and support's
actions (each with a reason, recorded, within the role matrix and the staff member's clinics)."""

from __future__ import annotations

import datetime
import re

import pytest
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.utils import timezone

from audit.models import PatientAccess
from billing.models import CancellationRequest
from events import webhooks
from events.models import Event, WebhookDelivery
from notifications import services as notifications
from notifications.models import Notification
from prescriptions.models import Prescription, Status
from support import enquiries, roles
from support.models import Enquiry, EnquiryNote, SupportAction
from support.services import staff_assign_clinic
from tests.events.factories import ClinicWebhookEndpointFactory, WebhookDeliveryFactory
from tests.outbox import owed_tasks
from tests.patients.factories import ClinicFactory, PatientFactory
from tests.support.factories import (
    EnquiryFactory,
    StaffClient,
    StaffFactory,
    paid_prescription,
    pharmacist_create,
    shipped_prescription,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():  # type: ignore[no-untyped-def]
    cache.clear()


def logged_in(user) -> StaffClient:  # type: ignore[no-untyped-def]
    client = StaffClient()
    client.force_login(user)
    return client


def support_for(clinic):  # type: ignore[no-untyped-def]
    user = StaffFactory(role=roles.SUPPORT)
    staff_assign_clinic(user=user, clinic=clinic)
    return user


def page_url(patient_id: int) -> str:
    return f"/admin/support/patient/{patient_id}/"


def action_url(patient_id: int) -> str:
    return f"/admin/support/patient/{patient_id}/act/"


def identity_of(patient) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "family_name": f"  {patient.family_name.upper()} ",
        "birth_date": patient.birth_date.isoformat(),
        "postal_code": patient.postal_code.lower().replace(" ", ""),
    }


def checked_client(user, patient) -> StaffClient:  # type: ignore[no-untyped-def]
    client = logged_in(user)
    response = client.post(page_url(patient.pk), identity_of(patient))
    assert response.status_code == 302
    return client


# --- Enquiries --------------------------------------------------------------------------------


def test_an_enquiry_is_due_after_its_categorys_sla(settings):
    settings.SUPPORT_ENQUIRY_SLA_HOURS = {**settings.SUPPORT_ENQUIRY_SLA_HOURS, "side_effects": 2}
    patient = PatientFactory()
    user = support_for(patient.clinic)
    before = timezone.now()

    enquiry = enquiries.enquiry_open(
        patient_id=patient.pk, channel="phone", category="side_effects", staff_user=user, note="Feels dizzy"
    )

    assert (
        before + datetime.timedelta(hours=2) <= enquiry.due_at <= timezone.now() + datetime.timedelta(hours=2)
    )
    assert (enquiry.status, enquiry.clinic_id, enquiry.created_by_id) == ("open", patient.clinic_id, user.pk)
    assert [note.body for note in enquiry.notes.all()] == ["Feels dizzy"]


def test_enquiry_notes_and_resolutions_are_encrypted_at_rest():
    patient = PatientFactory()
    user = support_for(patient.clinic)
    enquiry = enquiries.enquiry_open(
        patient_id=patient.pk,
        channel="phone",
        category="other",
        staff_user=user,
        note="Lives at 2 Sample Road",
    )
    enquiries.enquiry_resolve(enquiry_id=enquiry.pk, staff_user=user, resolution="Told her the dose again")

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT body FROM support_enquirynote WHERE enquiry_id = %s", [enquiry.pk])
        (stored_note,) = cursor.fetchone()
        cursor.execute("SELECT resolution FROM support_enquiry WHERE id = %s", [enquiry.pk])
        (stored_resolution,) = cursor.fetchone()

    assert "Sample Road" not in stored_note
    assert stored_note.startswith("gAAAA")
    assert "dose" not in stored_resolution
    assert stored_resolution.startswith("gAAAA")
    assert Enquiry.objects.get(pk=enquiry.pk).resolution == "Told her the dose again"


def test_the_queue_lists_unresolved_enquiries_soonest_due_first_with_the_overdue_highlighted():
    patient = PatientFactory()
    user = support_for(patient.clinic)
    now = timezone.now()
    later = EnquiryFactory(patient=patient, due_at=now + datetime.timedelta(hours=5))
    overdue = EnquiryFactory(patient=patient, due_at=now - datetime.timedelta(hours=1, minutes=30))
    EnquiryFactory(
        patient=patient, due_at=now - datetime.timedelta(hours=9), status="resolved", resolved_at=now
    )
    other_clinic = EnquiryFactory(due_at=now - datetime.timedelta(hours=3))

    response = logged_in(user).get("/admin/support/enquiry/")
    body = response.content.decode()

    shown = [int(number) for number in re.findall(r'href="/admin/support/enquiry/(\d+)/change/"', body)]
    assert response.status_code == 200
    assert shown == [overdue.pk, later.pk]
    assert other_clinic.pk not in shown
    assert body.count('class="due-overdue"') == 1
    assert "overdue 1 h 30 min" in body or "overdue 1 h 29 min" in body


def test_support_opens_an_enquiry_in_the_admin_and_the_first_note_is_kept():
    patient = PatientFactory()
    user = support_for(patient.clinic)

    response = logged_in(user).post(
        "/admin/support/enquiry/add/",
        {"patient": patient.pk, "channel": "email", "category": "payment", "note": "Charged twice?"},
    )

    enquiry = Enquiry.objects.get()
    assert response.status_code == 302
    assert (enquiry.category, enquiry.channel, enquiry.created_by_id) == ("payment", "email", user.pk)
    assert [note.body for note in enquiry.notes.all()] == ["Charged twice?"]


def test_support_cannot_open_an_enquiry_for_a_patient_of_a_clinic_they_do_not_serve():
    user = support_for(ClinicFactory())
    foreign = PatientFactory()

    response = logged_in(user).post(
        "/admin/support/enquiry/add/",
        {"patient": foreign.pk, "channel": "email", "category": "payment", "note": "?"},
    )

    assert response.status_code == 200
    assert "That patient belongs to a clinic you do not work for." in response.content.decode()
    assert Enquiry.objects.count() == 0


# --- The identity check and the patient page ---------------------------------------------------


def test_the_patient_page_shows_no_identifier_until_the_identity_check_passes(formulary):
    prescription = shipped_prescription()
    patient = prescription.patient
    client = logged_in(support_for(patient.clinic))

    before = client.get(page_url(patient.pk)).content.decode()
    wrong = client.post(page_url(patient.pk), {**identity_of(patient), "postal_code": "ZZ1 1ZZ"})
    after_wrong = wrong.content.decode()

    for page in (before, after_wrong):
        assert "Identity check" in page
        assert patient.family_name not in page
        assert patient.given_name not in page
        assert "SIM0123456789" not in page
    assert "Those details do not match our records." in after_wrong
    assert PatientAccess.objects.count() == 0
    assert list(SupportAction.objects.values_list("kind", "outcome")) == [("identity_check", "failed")]


def test_after_the_identity_check_the_page_shows_plain_status_timeline_notifications_and_enquiries(formulary):
    prescription = shipped_prescription(tracking_number="SIM5550001111")
    patient = prescription.patient
    enquiry = EnquiryFactory(patient=patient, prescription=prescription)
    user = support_for(patient.clinic)
    client = checked_client(user, patient)

    body = client.get(page_url(patient.pk)).content.decode()

    assert f"{patient.given_name} {patient.family_name}" in body
    assert re.search(r"Shipped with Royal Mail at \d\d:\d\d, tracking SIM5550001111", body)
    assert "prescription.acknowledged" in body
    assert "prescription.shipped" in body
    assert "shipped by Email: Sent" in body
    assert f"Enquiry #{enquiry.pk}: Where is my order" in body
    assert list(PatientAccess.objects.values_list("patient_id", "action", "staff_user_id")) == [
        (patient.pk, "detail", user.pk)
    ]


def test_the_patient_page_reads_a_fixed_number_of_queries_however_many_prescriptions(
    formulary, django_assert_max_num_queries
):
    first = shipped_prescription()
    patient = first.patient
    client = checked_client(support_for(patient.clinic), patient)
    with django_assert_max_num_queries(40) as one:
        client.get(page_url(patient.pk))
    for _ in range(4):
        shipped_prescription(patient_object=patient, clinic=patient.clinic)

    with django_assert_max_num_queries(len(one.captured_queries)):
        response = client.get(page_url(patient.pk))

    assert response.content.decode().count('class="module prescription-card"') == 5


def test_repeated_failed_identity_checks_lock_the_staff_member_out_of_that_patient(settings):
    settings.SUPPORT_IDENTITY_CHECK_ATTEMPTS = 3
    patient = PatientFactory()
    client = logged_in(support_for(patient.clinic))
    wrong = {**identity_of(patient), "family_name": "Nobody"}

    for _ in range(3):
        client.post(page_url(patient.pk), wrong)
    locked = client.post(page_url(patient.pk), identity_of(patient))

    assert "Too many failed identity checks" in locked.content.decode()
    assert patient.family_name not in locked.content.decode()
    assert list(SupportAction.objects.values_list("outcome", flat=True)) == ["failed", "failed", "failed"]


def test_support_staff_cannot_open_a_patient_of_a_clinic_they_do_not_serve():
    foreign = PatientFactory()
    client = logged_in(support_for(ClinicFactory()))

    assert client.get(page_url(foreign.pk)).status_code == 404
    assert client.post(page_url(foreign.pk), identity_of(foreign)).status_code == 404
    assert SupportAction.objects.count() == 0


@pytest.mark.parametrize("role", [roles.OPERATOR, roles.FINANCE])
def test_roles_without_the_support_console_cannot_open_the_patient_page(role):
    patient = PatientFactory()

    response = logged_in(StaffFactory(role=role)).get(page_url(patient.pk))

    assert response.status_code == 403


def test_finding_a_patient_by_prescription_number_shows_no_identifier(formulary):
    prescription = shipped_prescription()
    client = logged_in(support_for(prescription.clinic))

    body = client.get("/admin/support/find/", {"q": f"#{prescription.pk}"}).content.decode()

    assert f'href="/admin/support/patient/{prescription.patient_id}/"' in body
    assert prescription.patient.family_name not in body


def test_finding_a_patient_by_tracking_number_or_nhs_number(formulary):
    prescription = shipped_prescription(tracking_number="SIM7777777777")
    patient = prescription.patient
    client = logged_in(support_for(prescription.clinic))

    by_tracking = client.get("/admin/support/find/", {"q": "SIM7777777777"}).content.decode()
    by_nhs = client.get("/admin/support/find/", {"q": patient.nhs_number}).content.decode()

    assert f"/admin/support/patient/{patient.pk}/" in by_tracking
    assert f"/admin/support/patient/{patient.pk}/" in by_nhs


# --- Actions ------------------------------------------------------------------------------------


def test_resending_a_notification_queues_a_new_one_and_records_the_reason(formulary):
    prescription = shipped_prescription()
    patient = prescription.patient
    enquiry = EnquiryFactory(patient=patient, prescription=prescription)
    user = support_for(patient.clinic)
    client = checked_client(user, patient)
    original = Notification.objects.get()

    response = client.post(
        action_url(patient.pk),
        {
            "action": "resend_notification",
            "target": original.pk,
            "enquiry": enquiry.pk,
            "reason": "Patient deleted the email",
        },
    )

    resend = Notification.objects.exclude(pk=original.pk).get()
    action = SupportAction.objects.get(kind="resend_notification")
    assert response.status_code == 302
    assert owed_tasks(notifications.DELIVER_TASK) == [(notifications.DELIVER_TASK, [resend.pk])]
    assert (resend.status, resend.resend_of_id, resend.kind, resend.requested_by) == (
        "queued",
        original.pk,
        "shipped",
        f"user:{user.pk}",
    )
    assert (action.reason, action.enquiry_id, action.prescription_id, action.staff_user_id) == (
        "Patient deleted the email",
        enquiry.pk,
        prescription.pk,
        user.pk,
    )


def test_an_action_without_a_reason_is_refused_and_changes_nothing(formulary):
    prescription = shipped_prescription()
    patient = prescription.patient
    client = checked_client(support_for(patient.clinic), patient)

    response = client.post(
        action_url(patient.pk),
        {"action": "resend_notification", "target": Notification.objects.get().pk, "reason": "   "},
        follow=True,
    )

    assert "A reason is required" in response.content.decode()
    assert Notification.objects.count() == 1
    assert SupportAction.objects.exclude(kind="identity_check").count() == 0


def test_an_action_before_the_identity_check_is_refused(formulary):
    prescription = shipped_prescription()
    patient = prescription.patient
    client = logged_in(support_for(patient.clinic))

    response = client.post(
        action_url(patient.pk),
        {"action": "resend_notification", "target": Notification.objects.get().pk, "reason": "asked"},
        follow=True,
    )

    assert "Check the caller&#x27;s identity first." in response.content.decode()
    assert Notification.objects.count() == 1


def test_an_action_on_another_patients_notification_is_refused(formulary):
    mine = shipped_prescription()
    theirs = shipped_prescription(clinic=mine.clinic)
    client = checked_client(support_for(mine.clinic), mine.patient)
    foreign_notification = Notification.objects.get(patient=theirs.patient)

    response = client.post(
        action_url(mine.patient_id),
        {"action": "resend_notification", "target": foreign_notification.pk, "reason": "asked"},
    )

    assert response.status_code == 404
    assert Notification.objects.count() == 2


def test_the_queued_resend_is_sent_once_however_often_its_task_runs(formulary, mailoutbox, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    prescription = shipped_prescription(patient={"email": "sam@example.invalid", "phone": ""})
    resend = notifications.notification_resend(notification_id=Notification.objects.get().pk, actor="user:1")

    first = notifications.notification_deliver(notification_id=resend.pk)
    second = notifications.notification_deliver(notification_id=resend.pk)

    assert (first, second) == ("sent", "not-queued")
    assert [message.to for message in mailoutbox] == [["sam@example.invalid"]]
    assert "SIM0123456789" in mailoutbox[0].body
    assert prescription.pk == Notification.objects.get(pk=resend.pk).prescription_id


def test_a_notification_still_sending_cannot_be_resent(formulary):
    shipped_prescription()
    Notification.objects.update(status=Notification.Status.SENDING)

    with pytest.raises(notifications.NotificationNotResendable):
        notifications.notification_resend(notification_id=Notification.objects.get().pk, actor="user:1")

    assert Notification.objects.count() == 1


def test_resending_the_clinic_webhook_reopens_the_delivery(formulary):
    prescription = shipped_prescription()
    endpoint = ClinicWebhookEndpointFactory(
        clinic=prescription.clinic, url="https://clinic.example/h", secret="s"
    )
    event = Event.objects.get(aggregate_id=prescription.pk, type="prescription.shipped")
    delivery = WebhookDeliveryFactory(
        endpoint=endpoint, event=event, aggregate_id=prescription.pk, sequence=event.sequence, payload={"id": "evt"},
        status=WebhookDelivery.Status.FAILED, attempts=12,
    )  # fmt: skip
    client = checked_client(support_for(prescription.clinic), prescription.patient)

    client.post(
        action_url(prescription.patient_id),
        {"action": "resend_webhook", "target": delivery.pk, "reason": "Clinic missed the shipped update"},
    )

    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert owed_tasks(webhooks.DELIVER_TASK) == [(webhooks.DELIVER_TASK, [delivery.pk])]
    assert SupportAction.objects.get(kind="resend_webhook").outcome == f"delivery #{delivery.pk} resent"


def test_requesting_a_cancellation_goes_through_the_cancel_with_compensation_path(formulary):
    prescription = paid_prescription()
    user = support_for(prescription.clinic)
    client = checked_client(user, prescription.patient)

    client.post(
        action_url(prescription.patient_id),
        {"action": "request_cancellation", "target": prescription.pk, "reason": "Patient no longer needs it"},
    )

    prescription.refresh_from_db()
    cancelled = Event.objects.get(aggregate_id=prescription.pk, type="prescription.cancelled")
    assert prescription.status == Status.CANCELLED
    assert cancelled.actor == f"user:{user.pk}"
    # The reason is kept encrypted on the prescription, never in the event's payload.
    assert (prescription.status_reason, "reason" in cancelled.payload) == (
        "Patient no longer needs it",
        False,
    )
    assert SupportAction.objects.get(kind="request_cancellation").outcome == "cancelled"


def test_a_cancellation_the_pharmacy_already_dispensed_goes_to_the_staff_queue_and_is_recorded(formulary):
    from prescriptions import services

    prescription = shipped_prescription()
    services.prescription_record_progress(
        prescription_id=prescription.pk, gateway_event_type="order.delivered"
    )
    Prescription.objects.filter(pk=prescription.pk).update(status=Status.DISPENSED)
    client = checked_client(support_for(prescription.clinic), prescription.patient)

    client.post(
        action_url(prescription.patient_id),
        {"action": "request_cancellation", "target": prescription.pk, "reason": "Wrong address"},
    )

    action = SupportAction.objects.get(kind="request_cancellation")
    assert CancellationRequest.objects.filter(prescription=prescription).count() == 1
    assert "Our staff will review the cancellation" in action.outcome
    assert Prescription.objects.get(pk=prescription.pk).status == Status.DISPENSED


def test_escalating_hands_the_enquiry_to_a_pharmacist_who_sees_it_in_their_work(formulary):
    patient = PatientFactory()
    enquiry = EnquiryFactory(patient=patient, category="side_effects")
    client = checked_client(support_for(patient.clinic), patient)

    client.post(action_url(patient.pk), {"action": "escalate", "enquiry": enquiry.pk, "reason": "Chest pain"})
    pharmacist_home = logged_in(pharmacist_create()).get("/admin/").content.decode()

    enquiry.refresh_from_db()
    assert (enquiry.status, enquiry.escalated_at is not None) == ("escalated", True)
    assert list(enquiry.notes.values_list("body", flat=True)) == ["Escalated: Chest pain"]
    assert re.search(
        r'data-work="escalated_enquiries">\s*<a href="[^"]+"><span class="my-work-count">1</span>',
        pharmacist_home,
    )


def test_a_note_and_a_resolution_are_recorded_with_their_author():
    patient = PatientFactory()
    enquiry = EnquiryFactory(patient=patient)
    user = support_for(patient.clinic)
    client = checked_client(user, patient)

    client.post(
        action_url(patient.pk), {"action": "add_note", "enquiry": enquiry.pk, "reason": "Called back"}
    )
    client.post(
        action_url(patient.pk), {"action": "resolve", "enquiry": enquiry.pk, "reason": "Parcel arrived"}
    )

    enquiry.refresh_from_db()
    assert list(EnquiryNote.objects.values_list("body", "author_id")) == [("Called back", user.pk)]
    assert (enquiry.status, enquiry.resolution) == ("resolved", "Parcel arrived")
    assert list(SupportAction.objects.order_by("id").values_list("kind", flat=True)) == [
        "identity_check",
        "add_note",
        "resolve",
    ]


def test_a_pharmacist_answers_an_escalated_enquiry_but_may_not_take_supports_actions(formulary):
    prescription = shipped_prescription()
    patient = prescription.patient
    enquiry = EnquiryFactory(patient=patient, status="escalated", category="side_effects")
    pharmacist = pharmacist_create()
    client = checked_client(pharmacist, patient)
    notification = Notification.objects.get()

    resend = client.post(
        action_url(patient.pk), {"action": "resend_notification", "target": notification.pk, "reason": "x"}
    )
    cancel = client.post(
        action_url(patient.pk), {"action": "request_cancellation", "target": prescription.pk, "reason": "x"}
    )
    client.post(
        action_url(patient.pk),
        {"action": "resolve", "enquiry": enquiry.pk, "reason": "Advised: stop and see GP"},
    )

    assert (resend.status_code, cancel.status_code) == (403, 403)
    assert Notification.objects.count() == 1
    assert Prescription.objects.get(pk=prescription.pk).status == Status.SHIPPED
    enquiry.refresh_from_db()
    assert (enquiry.status, enquiry.resolution) == ("resolved", "Advised: stop and see GP")


def test_the_support_action_log_refuses_updates_and_deletes_but_key_rotation_may_rewrite_the_reason():
    patient = PatientFactory()
    user = support_for(patient.clinic)
    enquiry = EnquiryFactory(patient=patient)
    enquiries.enquiry_add_note(enquiry_id=enquiry.pk, staff_user=user, body="A note")
    action = SupportAction.objects.get()

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        SupportAction.objects.filter(pk=action.pk).update(outcome="changed")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        SupportAction.objects.filter(pk=action.pk).delete()
    rotated = enquiries.support_keys_rotate()

    assert rotated == 3  # the enquiry, its note, the action
    assert SupportAction.objects.get(pk=action.pk).reason == "A note"
