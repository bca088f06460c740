"""The back office: prescription pages, the pharmacist review, and dead-letter replay."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission

from events.models import Event
from pharmacy import tasks as pharmacy_tasks
from pharmacy.models import DeadLetter, Dispatch
from prescriptions import services
from prescriptions.models import PharmacistReview, Prescription, Status
from tests.patients.factories import ClinicFactory, PatientFactory
from tests.prescriptions.factories import PrescriberFactory
from tests.support.factories import pharmacist_create

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/prescriptions/prescription/"


def a_prescription(medication, *, checked: bool = True) -> Prescription:  # type: ignore[no-untyped-def]
    clinic = ClinicFactory()
    prescription = services.prescription_create(
        clinic=clinic,
        patient=PatientFactory(clinic=clinic),
        prescriber=PrescriberFactory(clinic=clinic),
        items=[
            {
                "medication": medication,
                "dose_text": "One a day",
                "quantity": 28,
                "unit": "tablet",
                "days_supply": 28,
            }
        ],
    )
    if checked:
        services.prescription_run_checks(prescription_id=prescription.pk)
    prescription.refresh_from_db()
    return prescription


def review_url(prescription: Prescription) -> str:
    return f"{CHANGELIST}{prescription.pk}/review/"


def staff(django_user_model, username: str, *permissions: str):  # type: ignore[no-untyped-def]
    user = django_user_model.objects.create_user(username=username, is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


@pytest.fixture
def superuser_client(client, django_user_model):  # type: ignore[no-untyped-def]
    client.force_login(django_user_model.objects.create_superuser(username="root", email="root@example.org"))
    return client


@pytest.fixture
def pharmacist(db):  # type: ignore[no-untyped-def]
    return pharmacist_create(username="pharmacist")


@pytest.fixture
def pharmacist_client(client, pharmacist):  # type: ignore[no-untyped-def]
    client.force_login(pharmacist)
    return client


def snapshot(prescription: Prescription) -> dict:
    return Prescription.objects.filter(pk=prescription.pk).values().get()


def event_types(prescription: Prescription) -> list[str]:
    return list(
        Event.objects.filter(aggregate_id=prescription.pk, aggregate_type="prescription").values_list(
            "type", flat=True
        )
    )


# --- prescription pages -------------------------------------------------------------------


def test_a_superuser_opens_the_changelist_and_the_change_page_with_its_timeline(
    superuser_client, methylphenidate
):
    prescription = a_prescription(methylphenidate)

    changelist = superuser_client.get(CHANGELIST)
    change = superuser_client.get(f"{CHANGELIST}{prescription.pk}/change/")

    assert changelist.status_code == 200
    assert f"{CHANGELIST}{prescription.pk}/change/" in changelist.content.decode()
    assert change.status_code == 200
    page = change.content.decode()
    timeline = re.findall(r"<div>(\d+)\. [\d:\- ]+ — ([\w.]+) <small>\(([\w:]*)\)</small></div>", page)
    assert timeline == [
        ("1", "prescription.received", ""),
        ("2", "prescription.awaiting_pharmacist", "checks"),
    ]
    assert "controlled_drug.pharmacist_approval" in page
    # A superuser is not a registered pharmacist: no review link (support.services.staff_can_decide).
    assert review_url(prescription) not in page


def test_a_registered_pharmacist_is_offered_the_review_link(pharmacist_client, methylphenidate):
    prescription = a_prescription(methylphenidate)

    change = pharmacist_client.get(f"{CHANGELIST}{prescription.pk}/change/")

    assert change.status_code == 200
    assert review_url(prescription) in change.content.decode()


def test_the_review_link_is_offered_only_while_awaiting_a_pharmacist(superuser_client, paracetamol):
    prescription = a_prescription(paracetamol)

    change = superuser_client.get(f"{CHANGELIST}{prescription.pk}/change/")

    assert prescription.status == Status.APPROVED
    assert review_url(prescription) not in change.content.decode()


# --- pharmacist review --------------------------------------------------------------------


def test_a_staff_user_who_is_not_a_pharmacist_cannot_review(client, django_user_model, methylphenidate):
    prescription = a_prescription(methylphenidate)
    before = snapshot(prescription)
    client.force_login(staff(django_user_model, "support", "view_prescription", "change_prescription"))

    page = client.get(review_url(prescription))
    decision = client.post(review_url(prescription), {"decision": "approved", "reason": "Looks fine"})

    assert page.status_code == 403
    assert decision.status_code == 403
    assert snapshot(prescription) == before
    assert PharmacistReview.objects.count() == 0
    assert event_types(prescription) == ["prescription.received", "prescription.awaiting_pharmacist"]


def test_a_pharmacist_sees_the_check_results_on_the_review_page(pharmacist_client, methylphenidate):
    prescription = a_prescription(methylphenidate)

    response = pharmacist_client.get(review_url(prescription))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Schedule 2 controlled drug" in page
    assert 'name="reason"' in page


def test_a_pharmacist_approves_a_prescription_with_a_reason(pharmacist_client, pharmacist, methylphenidate):
    prescription = a_prescription(methylphenidate)

    response = pharmacist_client.post(
        review_url(prescription), {"decision": "approved", "reason": "  ADHD, dose checked with GP  "}
    )

    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST}{prescription.pk}/change/"
    prescription.refresh_from_db()
    assert prescription.status == Status.APPROVED
    assert prescription.status_reason == ""
    review = PharmacistReview.objects.get()
    assert review.prescription == prescription
    assert review.pharmacist == pharmacist
    assert review.decision == "approved"
    assert review.reason == "ADHD, dose checked with GP"
    event = Event.objects.get(aggregate_id=prescription.pk, type="prescription.pharmacist_approved")
    assert event.sequence == 3
    assert event.payload == {"from": "awaiting_pharmacist", "to": "approved", "review_id": review.pk}
    assert event.actor == f"user:{pharmacist.pk}"
    assert services.has_pharmacist_approval(prescription_id=prescription.pk) is True


def test_a_pharmacist_rejects_a_prescription_and_the_reason_is_kept(pharmacist_client, methylphenidate):
    prescription = a_prescription(methylphenidate)

    pharmacist_client.post(review_url(prescription), {"decision": "rejected", "reason": "Duplicate therapy"})

    prescription.refresh_from_db()
    assert prescription.status == Status.REJECTED
    assert prescription.status_reason == "Duplicate therapy"
    assert PharmacistReview.objects.get().decision == "rejected"
    assert event_types(prescription)[-1] == "prescription.pharmacist_rejected"
    assert services.has_pharmacist_approval(prescription_id=prescription.pk) is False


@pytest.mark.parametrize("reason", ["", "   "], ids=["empty", "blank"])
def test_a_decision_without_a_reason_changes_nothing(pharmacist_client, methylphenidate, reason):
    prescription = a_prescription(methylphenidate)
    before = snapshot(prescription)

    response = pharmacist_client.post(review_url(prescription), {"decision": "approved", "reason": reason})

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert snapshot(prescription) == before
    assert PharmacistReview.objects.count() == 0
    assert event_types(prescription) == ["prescription.received", "prescription.awaiting_pharmacist"]


def test_reviewing_a_prescription_that_is_not_awaiting_records_no_review(pharmacist_client, paracetamol):
    prescription = a_prescription(paracetamol)
    before = snapshot(prescription)

    page = pharmacist_client.get(review_url(prescription))
    response = pharmacist_client.post(
        review_url(prescription), {"decision": "rejected", "reason": "Too late"}, follow=True
    )

    assert prescription.status == Status.APPROVED
    assert "This prescription is not waiting for a pharmacist." in page.content.decode()
    assert "This prescription is not waiting for a pharmacist." in response.content.decode()
    assert snapshot(prescription) == before
    assert PharmacistReview.objects.count() == 0
    assert event_types(prescription) == ["prescription.received", "prescription.approved"]


def test_reviewing_a_prescription_that_does_not_exist_is_not_found(pharmacist_client):
    assert pharmacist_client.get(f"{CHANGELIST}987654/review/").status_code == 404
    assert PharmacistReview.objects.count() == 0


# --- dead-letter replay ---------------------------------------------------------------------


@pytest.fixture
def dead_letter(paracetamol) -> DeadLetter:  # type: ignore[no-untyped-def]
    prescription = a_prescription(paracetamol)
    dispatch = Dispatch.objects.create(prescription=prescription, attempts=8)
    services.prescription_record_dead_lettered(prescription_id=prescription.pk, error="gateway 503")
    Dispatch.objects.filter(pk=dispatch.pk).update(
        status=Dispatch.Status.DEAD_LETTERED, last_error="gateway 503"
    )
    return DeadLetter.objects.create(dispatch=dispatch, error="gateway 503", attempts=8)


def replay(client, letter: DeadLetter, *, follow: bool = False):  # type: ignore[no-untyped-def]
    return client.post(
        "/admin/pharmacy/deadletter/", {"action": "replay", "_selected_action": [letter.pk]}, follow=follow
    )


def test_replaying_a_dead_letter_reopens_its_dispatch_and_enqueues_a_send(
    superuser_client, dead_letter, monkeypatch, django_capture_on_commit_callbacks
):  # type: ignore[no-untyped-def]
    enqueued: list[int] = []
    monkeypatch.setattr(pharmacy_tasks.dispatch_send, "delay", enqueued.append)
    key = dead_letter.dispatch.idempotency_key

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = replay(superuser_client, dead_letter)

    assert response.status_code == 302
    dispatch = Dispatch.objects.get()
    assert dispatch.status == Dispatch.Status.PENDING
    assert dispatch.attempts == 0
    assert dispatch.idempotency_key == key
    dead_letter.refresh_from_db()
    assert dead_letter.resolution == "replayed"
    assert dead_letter.resolved_at is not None
    assert len(callbacks) == 1
    callbacks[0]()
    assert enqueued == [dispatch.pk]


def test_replaying_the_same_dead_letter_twice_does_nothing_the_second_time(
    superuser_client, dead_letter, django_capture_on_commit_callbacks
):  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=False):
        replay(superuser_client, dead_letter, follow=True)
    dead_letter.refresh_from_db()
    resolved_at = dead_letter.resolved_at
    Dispatch.objects.update(attempts=3)  # the reopened dispatch has been tried again since

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = replay(superuser_client, dead_letter, follow=True)

    assert response.status_code == 200
    assert callbacks == []
    dispatch = Dispatch.objects.get()
    assert dispatch.status == Dispatch.Status.PENDING
    assert dispatch.attempts == 3
    dead_letter.refresh_from_db()
    assert dead_letter.resolution == "replayed"
    assert dead_letter.resolved_at == resolved_at
    messages = [str(message) for message in response.context["messages"]]
    assert messages == ["Replayed 0 dead letter(s).", "1 were already resolved and were left alone."]
