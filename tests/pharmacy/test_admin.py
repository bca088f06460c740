"""The back office for operators: prescription pages and dead-letter replay."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission

from events.models import Event, OutboxTask
from pharmacy.models import DeadLetter, Dispatch
from pharmacy.services import DISPATCH_SEND_TASK
from prescriptions import services
from prescriptions.models import Prescription, Status
from tests.outbox import owed_tasks
from tests.patients.factories import ClinicFactory, PatientFactory
from tests.prescriptions.factories import PrescriberFactory

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
def pharmacist(django_user_model):  # type: ignore[no-untyped-def]
    return staff(django_user_model, "pharmacist", "add_pharmacistreview", "view_prescription")


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


# --- prescription pages ---


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
        ("2", f"prescription.{prescription.status}", "checks"),
    ]
    assert prescription.check_results
    assert all(result["code"] in page for result in prescription.check_results)


def test_the_review_link_is_offered_only_while_awaiting_a_pharmacist(superuser_client, paracetamol):
    prescription = a_prescription(paracetamol)

    change = superuser_client.get(f"{CHANGELIST}{prescription.pk}/change/")

    assert prescription.status == Status.APPROVED
    assert review_url(prescription) not in change.content.decode()


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


def test_replaying_a_dead_letter_reopens_its_dispatch_and_enqueues_a_send(superuser_client, dead_letter):  # type: ignore[no-untyped-def]
    key = dead_letter.dispatch.idempotency_key
    OutboxTask.objects.all().delete()

    response = replay(superuser_client, dead_letter)

    assert response.status_code == 302
    dispatch = Dispatch.objects.get()
    assert dispatch.status == Dispatch.Status.PENDING
    assert dispatch.attempts == 0
    assert dispatch.idempotency_key == key
    dead_letter.refresh_from_db()
    assert dead_letter.resolution == "replayed"
    assert dead_letter.resolved_at is not None
    assert owed_tasks() == [(DISPATCH_SEND_TASK, [dispatch.pk])]


def test_replaying_the_same_dead_letter_twice_does_nothing_the_second_time(superuser_client, dead_letter):  # type: ignore[no-untyped-def]
    replay(superuser_client, dead_letter, follow=True)
    dead_letter.refresh_from_db()
    resolved_at = dead_letter.resolved_at
    Dispatch.objects.update(attempts=3)  # the reopened dispatch has been tried again since
    OutboxTask.objects.all().delete()  # and its send ran

    response = replay(superuser_client, dead_letter, follow=True)

    assert response.status_code == 200
    assert owed_tasks() == []
    dispatch = Dispatch.objects.get()
    assert dispatch.status == Dispatch.Status.PENDING
    assert dispatch.attempts == 3
    dead_letter.refresh_from_db()
    assert dead_letter.resolution == "replayed"
    assert dead_letter.resolved_at == resolved_at
    messages = [str(message) for message in response.context["messages"]]
    assert messages == ["Replayed 0 dead letter(s).", "1 were already resolved and were left alone."]


@pytest.fixture
def paid_dead_letter(clinic_a, paracetamol, django_capture_on_commit_callbacks) -> DeadLetter:  # type: ignore[no-untyped-def]
    from pharmacy import services as pharmacy_services
    from tests.pharmacy.factories import approved_prescription

    prescription = approved_prescription(clinic_a, paracetamol)
    with django_capture_on_commit_callbacks(execute=False):
        dispatch = pharmacy_services.dispatch_create(prescription_id=prescription.pk)
    return pharmacy_services.dispatch_dead_letter(dispatch_id=dispatch.pk, error="gateway 503")


def test_cancelling_a_dead_letter_cancels_its_prescription_with_compensation_once(
    superuser_client, paid_dead_letter, django_capture_on_commit_callbacks
):  # type: ignore[no-untyped-def]
    prescription_id = paid_dead_letter.dispatch.prescription_id
    assert Prescription.objects.get(pk=prescription_id).status == Status.DEAD_LETTERED
    action = {"action": "cancel_with_compensation", "_selected_action": [paid_dead_letter.pk]}

    with django_capture_on_commit_callbacks(execute=False):
        first = superuser_client.post("/admin/pharmacy/deadletter/", action, follow=True)
        second = superuser_client.post("/admin/pharmacy/deadletter/", action, follow=True)

    assert first.status_code == 200
    assert [str(message) for message in first.context["messages"]] == [
        f"Dead letter #{paid_dead_letter.pk}: prescription cancelled."
    ]
    assert [str(message) for message in second.context["messages"]] == []
    paid_dead_letter.refresh_from_db()
    assert paid_dead_letter.resolution == "cancelled"
    assert Prescription.objects.get(pk=prescription_id).status == Status.CANCELLED
    assert event_types(Prescription.objects.get(pk=prescription_id)).count("prescription.cancelled") == 1


def test_a_dead_letter_refused_under_eps_rules_shows_each_broken_rule(superuser_client, dead_letter):  # type: ignore[no-untyped-def]
    DeadLetter.objects.filter(pk=dead_letter.pk).update(
        error="gateway refused the order: 400 The NHS number fails its Modulus 11 check.",
        payload={
            "prescription_id": dead_letter.dispatch.prescription_id,
            "operation_outcome": {
                "resourceType": "OperationOutcome",
                "issue": [
                    {
                        "severity": "error",
                        "code": "value",
                        "diagnostics": "The NHS number fails its Modulus 11 check.",
                        "expression": ["Patient.identifier"],
                        "details": ["INVALID_VALUE"],
                    },
                    {
                        "severity": "error",
                        "code": "value",
                        "diagnostics": "The short-form prescription ID's check character is <wrong>.",
                        "expression": ["MedicationRequest[0].groupIdentifier.value"],
                        "details": ["INVALID_CHECKSUM"],
                    },
                ],
            },
        },
    )

    response = superuser_client.get(f"/admin/pharmacy/deadletter/{dead_letter.pk}/change/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Refused by the gateway because" in page
    assert "INVALID_VALUE Patient.identifier: The NHS number fails its Modulus 11 check.<br>" in page
    assert (
        "INVALID_CHECKSUM MedicationRequest[0].groupIdentifier.value: "
        "The short-form prescription ID&#x27;s check character is &lt;wrong&gt;." in page
    )
