"""The pharmacist's back office in the admin, through Django's test client: the queue, the
one-screen review, and who may decide what."""

from __future__ import annotations

import datetime
import time

import pytest
from django.db import connection, transaction
from django.db.utils import Error as DatabaseError
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common.errors import Conflict, NotAllowed
from events.models import Event
from prescriptions import services
from prescriptions.models import (
    Medication,
    PharmacistReview,
    Prescription,
    PrescriptionItem,
    Status,
)
from support import roles
from tests.patients.factories import AllergyFactory, CurrentMedicationFactory
from tests.prescriptions.factories import PharmacistProfileFactory, adhd_context, checked, scenario
from tests.support.factories import role_group

pytestmark = pytest.mark.django_db

QUEUE = "/admin/prescriptions/pharmacistqueue/"
CD_ITEM = {
    "dose_text": "One tablet twice a day",
    "quantity": 56,
    "quantity_words": "fifty six",
    "days_supply": 28,
}


def review_url(prescription: Prescription) -> str:
    return f"/admin/prescriptions/prescription/{prescription.pk}/review/"


def make_staff(django_user_model, username: str, *, pharmacist: bool = True, registration: str = "2087654"):  # type: ignore[no-untyped-def]
    user = django_user_model.objects.create_user(username, password="x", is_staff=True)
    if pharmacist:
        user.groups.add(role_group(roles.PHARMACIST))
    if registration is not None:
        PharmacistProfileFactory(user=user, registration_body="GPhC", registration_number=registration)
    return django_user_model.objects.get(pk=user.pk)


def awaiting(**overrides) -> Prescription:  # type: ignore[no-untyped-def]
    prescription = scenario(
        code=overrides.pop("code", "324907005"),
        item={**CD_ITEM, **overrides.pop("item", {})},
        **{**adhd_context(), **overrides},
    )
    checked(prescription)
    prescription.refresh_from_db()
    assert prescription.status == Status.AWAITING_PHARMACIST
    return prescription


@pytest.fixture
def pharmacist(django_user_model, client):  # type: ignore[no-untyped-def]
    user = make_staff(django_user_model, "pharmacist")
    client.force_login(user)
    return user


def test_the_queue_lists_only_waiting_prescriptions_oldest_first(formulary, pharmacist, client):
    first, second = awaiting(), awaiting()
    approved = scenario()
    checked(approved)

    response = client.get(QUEUE)

    assert response.status_code == 200
    rows = [obj.pk for obj in response.context["cl"].result_list]
    assert rows == [first.pk, second.pk]
    assert f'href="{review_url(first)}"' in response.content.decode()
    assert approved.pk not in rows


def test_the_queue_stays_at_a_constant_query_count_with_ten_thousand_waiting(formulary, pharmacist, client):
    template = awaiting()
    small = client.get(QUEUE)
    assert small.status_code == 200
    with CaptureQueriesContext(connection) as few:
        client.get(QUEUE)
    medication = Medication.objects.get(code="324907005")
    rows = [
        Prescription(
            clinic=template.clinic,
            patient=template.patient,
            prescriber=template.prescriber,
            status=Status.AWAITING_PHARMACIST,
            issued_on=template.issued_on,
            check_results=template.check_results,
        )
        for _ in range(10_000)
    ]
    created = Prescription.objects.bulk_create(rows, batch_size=2000)
    PrescriptionItem.objects.bulk_create(
        [
            PrescriptionItem(
                prescription=row,
                medication=medication,
                dose_text="One a day",
                quantity=28,
                unit="tablet",
                days_supply=28,
            )
            for row in created
        ],
        batch_size=2000,
    )

    started = time.perf_counter()
    with CaptureQueriesContext(connection) as many:
        response = client.get(QUEUE)
    elapsed = time.perf_counter() - started

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 100
    assert response.context["cl"].result_list[0].pk == template.pk
    # Past 10,000 rows the paginator stops counting and asks the planner (one EXPLAIN) instead.
    assert len(many) == len(few) + 1
    assert [query["sql"].startswith("EXPLAIN") for query in many.captured_queries].count(True) == 1
    assert elapsed < 5  # measured about 0.2 s; generous for a shared machine


def test_the_review_screen_shows_everything_on_one_page(formulary, pharmacist, client):
    previous = awaiting(issued_on=timezone.localdate() - datetime.timedelta(days=27))
    Prescription.objects.filter(pk=previous.pk).update(status=Status.DELIVERED)
    current = awaiting(
        code="9211711000001107",
        item={"dose_text": "Two tablets each morning", "quantity": 56, "quantity_words": "fifty six"},
        clinic=previous.clinic,
        patient_object=previous.patient,
        prescriber_object=previous.prescriber,
    )
    AllergyFactory(patient=current.patient, substance="penicillin", reaction="rash")
    CurrentMedicationFactory(patient=current.patient, name="Omeprazole 20mg")

    response = client.get(review_url(current))

    page = response.content.decode()
    assert response.status_code == 200
    assert "controlled_drug.pharmacist_approval" in page
    assert "Titration step up: Methylphenidate 36 mg a day" in page
    assert "penicillin (rash)" in page
    assert "Omeprazole 20mg" in page
    supplies = response.context["controlled_supplies"]
    assert [(item.prescription_id, item.days_supply) for item in supplies] == [(previous.pk, 28)]
    assert 'name="decision"' in page


def test_a_pharmacist_approves_with_a_reason_and_the_decision_is_recorded(formulary, pharmacist, client):
    prescription = awaiting()

    response = client.post(
        review_url(prescription), {"decision": "approved", "reason": "Monitoring up to date."}
    )

    assert response.status_code == 302
    assert response["Location"] == QUEUE
    prescription.refresh_from_db()
    assert prescription.status == Status.APPROVED
    review = PharmacistReview.objects.get(prescription=prescription)
    assert (review.pharmacist_id, review.decision, review.reason) == (
        pharmacist.pk,
        "approved",
        "Monitoring up to date.",
    )
    event = Event.objects.get(aggregate_id=prescription.pk, type="prescription.pharmacist_approved")
    assert event.actor == f"user:{pharmacist.pk}"
    assert event.payload["review_id"] == review.pk


def test_a_pharmacist_rejects_and_the_reason_reaches_the_prescription(formulary, pharmacist, client):
    prescription = awaiting()

    client.post(review_url(prescription), {"decision": "rejected", "reason": "Pulse too high at review."})

    prescription.refresh_from_db()
    assert prescription.status == Status.REJECTED
    assert prescription.status_reason == "Pulse too high at review."


def test_a_decision_without_a_reason_is_not_recorded(formulary, pharmacist, client):
    prescription = awaiting()

    response = client.post(review_url(prescription), {"decision": "approved", "reason": ""})

    assert response.status_code == 200
    assert response.context["form"].errors == {"reason": ["This field is required."]}
    assert PharmacistReview.objects.count() == 0
    assert Prescription.objects.get(pk=prescription.pk).status == Status.AWAITING_PHARMACIST


@pytest.mark.parametrize(("pharmacist_role", "registration"), [(True, ""), (True, None), (False, "2087654")])
def test_only_a_registered_pharmacist_may_decide(
    formulary, django_user_model, client, pharmacist_role, registration
):
    user = make_staff(django_user_model, "someone", pharmacist=pharmacist_role, registration=registration)
    client.force_login(user)
    prescription = awaiting()

    response = client.post(review_url(prescription), {"decision": "approved", "reason": "Looks fine."})

    # The review page itself is closed to anyone who may not decide (support.services).
    assert response.status_code == 403
    assert PharmacistReview.objects.count() == 0
    assert Prescription.objects.get(pk=prescription.pk).status == Status.AWAITING_PHARMACIST
    assert not Event.objects.filter(
        aggregate_id=prescription.pk, type__startswith="prescription.pharmacist_"
    ).exists()


def test_nobody_may_decide_a_prescription_they_wrote(formulary, pharmacist, client):
    prescription = awaiting()
    prescription.prescriber.user = pharmacist
    prescription.prescriber.save()

    page = client.get(review_url(prescription)).content.decode()
    with pytest.raises(NotAllowed, match="another pharmacist must decide"):
        services.prescription_review(
            prescription_id=prescription.pk, pharmacist=pharmacist, decision="approved", reason="Mine."
        )

    assert "You wrote this prescription" in page
    assert PharmacistReview.objects.count() == 0
    assert Prescription.objects.get(pk=prescription.pk).status == Status.AWAITING_PHARMACIST


def test_a_decision_cannot_be_changed_afterwards(formulary, pharmacist, client):
    prescription = awaiting()
    client.post(review_url(prescription), {"decision": "approved", "reason": "Fine."})

    second = client.post(review_url(prescription), {"decision": "rejected", "reason": "Changed my mind."})
    review = PharmacistReview.objects.get()
    with pytest.raises(DatabaseError, match="cannot be changed"), transaction.atomic():
        PharmacistReview.objects.filter(pk=review.pk).update(decision="rejected")
    with pytest.raises(DatabaseError, match="cannot be changed"), transaction.atomic():
        PharmacistReview.objects.filter(pk=review.pk).delete()

    assert second.status_code == 302
    assert PharmacistReview.objects.get().decision == "approved"
    assert Prescription.objects.get(pk=prescription.pk).status == Status.APPROVED


def test_a_gb_controlled_drug_with_a_start_date_to_come_may_be_approved_and_is_held(formulary, pharmacist):
    """Source: Misuse of Drugs Regulations 2001, regulation 16 (no supply before the appropriate
    date): approval is allowed, supply is held (saga.holds) until the start date."""
    prescription = awaiting(start_date=timezone.localdate() + datetime.timedelta(days=2))
    assert "dates.supply_held" in {r["code"] for r in prescription.check_results}

    services.prescription_review(
        prescription_id=prescription.pk, pharmacist=pharmacist, decision="approved", reason="OK."
    )

    assert Prescription.objects.get(pk=prescription.pk).status == Status.APPROVED


def test_an_expired_gb_controlled_drug_cannot_be_approved(formulary, pharmacist):
    """Source: Misuse of Drugs Regulations 2001, regulation 16 (28 days from the appropriate date)."""
    prescription = awaiting()
    Prescription.objects.filter(pk=prescription.pk).update(
        issued_on=timezone.localdate() - datetime.timedelta(days=29)
    )

    with pytest.raises(Conflict, match="may be supplied only from"):
        services.prescription_review(
            prescription_id=prescription.pk, pharmacist=pharmacist, decision="approved", reason="OK."
        )

    assert PharmacistReview.objects.count() == 0
    assert Prescription.objects.get(pk=prescription.pk).status == Status.AWAITING_PHARMACIST


def test_the_demo_data_has_a_pharmacist_who_may_decide_and_lawful_prescribers(
    settings, tmp_path, django_user_model
):
    from io import StringIO

    from django.core.management import call_command

    from prescriptions.models import Prescriber

    settings.VAR_DIR = tmp_path
    call_command("seed_demo", stdout=StringIO())

    assert services.pharmacist_may_decide(django_user_model.objects.get(username="pharmacist")) is True
    assert set(Prescriber.objects.values_list("controlled_drugs_authorised", flat=True)) == {True}
