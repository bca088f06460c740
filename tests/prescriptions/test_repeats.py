"""Repeats and titration: due repeats issued once each from a date in the database,
through the checks again, even with two schedulers racing; staff can pause or stop a series."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection

from events.models import Event
from prescriptions import repeats, services
from prescriptions.models import Prescription, RepeatSeries, Status
from tests.conftest import prescription_body
from tests.prescriptions.factories import adhd_context, scenario

pytestmark = pytest.mark.django_db


def approved_with_repeats(count: int = 2, **fields) -> Prescription:  # type: ignore[no-untyped-def]
    prescription = scenario(repeats=count, **fields)
    assert services.prescription_run_checks(prescription_id=prescription.pk) == Status.APPROVED
    return prescription


def started(count: int = 2, **fields) -> RepeatSeries:  # type: ignore[no-untyped-def]
    prescription = approved_with_repeats(count, **fields)
    series = repeats.repeat_series_start(prescription_id=prescription.pk)
    assert series is not None
    return series


def test_an_approved_prescription_with_repeats_starts_a_series_due_after_its_supply(formulary):
    prescription = approved_with_repeats(2)

    series = repeats.repeat_series_start(prescription_id=prescription.pk)
    again = repeats.repeat_series_start(prescription_id=prescription.pk)

    assert again.pk == series.pk
    assert (series.interval_days, series.repeats_total, series.issued_count) == (14, 2, 0)
    assert series.next_due_on == prescription.issued_on + timedelta(days=14)
    assert series.status == RepeatSeries.Status.ACTIVE


def test_a_clinic_chosen_interval_wins_over_the_days_supply(formulary):
    series = started(2, repeat_interval_days=28)
    assert series.interval_days == 28
    assert series.next_due_on == series.origin.issued_on + timedelta(days=28)


def test_a_due_repeat_is_issued_once_as_a_linked_prescription_that_is_checked_again(formulary):
    series = started(2)
    origin = series.origin
    due = series.next_due_on

    first = repeats.repeat_series_issue_due(today=due)
    second = repeats.repeat_series_issue_due(today=due)

    assert second == []
    (new_id,) = first
    new = Prescription.objects.get(pk=new_id)
    assert (new.previous_id, new.link_kind, new.issued_on, new.repeats) == (origin.pk, "repeat", due, 0)
    assert (new.patient_id, new.prescriber_id, new.clinic_id) == (
        origin.patient_id,
        origin.prescriber_id,
        origin.clinic_id,
    )
    assert list(new.items.values_list("medication_id", "dose_text", "quantity", "days_supply")) == list(
        origin.items.values_list("medication_id", "dose_text", "quantity", "days_supply")
    )
    received = Event.objects.get(aggregate_id=new.pk, type="prescription.received")
    assert (received.payload["previous"], received.payload["link_kind"]) == (origin.pk, "repeat")
    series.refresh_from_db()
    assert (series.issued_count, series.latest_id, series.next_due_on) == (
        1,
        new.pk,
        due + timedelta(days=14),
    )
    assert services.prescription_run_checks(prescription_id=new.pk) == Status.APPROVED


def test_with_time_moved_forward_each_repeat_is_issued_once_then_the_series_completes(formulary):
    series = started(3)
    start = series.origin.issued_on

    issued = [
        pk
        for day in range(0, 120)
        for pk in repeats.repeat_series_issue_due(today=start + timedelta(days=day))
    ]

    assert len(issued) == 3
    chain = list(
        Prescription.objects.filter(pk__in=issued).order_by("pk").values_list("issued_on", "previous_id")
    )
    assert [issued_on for issued_on, _ in chain] == [start + timedelta(days=14 * n) for n in (1, 2, 3)]
    assert [previous for _, previous in chain] == [series.origin_id, issued[0], issued[1]]
    series.refresh_from_db()
    assert (series.status, series.issued_count, series.next_due_on) == ("completed", 3, None)


@pytest.mark.django_db(transaction=True)
def test_two_schedulers_racing_issue_each_due_repeat_once(formulary):
    series = [started(2) for _ in range(6)]
    due = max(item.next_due_on for item in series)

    def scheduler() -> list[int]:
        try:
            return repeats.repeat_series_issue_due(today=due)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = [future.result() for future in [pool.submit(scheduler), pool.submit(scheduler)]]

    issued = results[0] + results[1]
    assert len(issued) == len(set(issued)) == 6
    assert Prescription.objects.filter(link_kind="repeat").count() == 6
    assert sorted(RepeatSeries.objects.values_list("issued_count", flat=True)) == [1] * 6


def test_a_paused_series_issues_nothing_until_resumed_and_a_stopped_one_never(formulary):
    paused, stopped = started(2), started(2)
    due = max(paused.next_due_on, stopped.next_due_on)

    assert repeats.repeat_series_pause(series_id=paused.pk, actor="user:1")
    assert repeats.repeat_series_stop(series_id=stopped.pk, actor="user:1")
    assert repeats.repeat_series_issue_due(today=due) == []
    assert repeats.repeat_series_resume(series_id=paused.pk, actor="user:1")
    assert not repeats.repeat_series_resume(series_id=stopped.pk, actor="user:1")
    issued = repeats.repeat_series_issue_due(today=due)

    assert [Prescription.objects.get(pk=pk).previous_id for pk in issued] == [paused.origin_id]
    assert RepeatSeries.objects.get(pk=stopped.pk).status == RepeatSeries.Status.STOPPED
    assert not Prescription.objects.filter(previous_id=stopped.origin_id).exists()


def test_a_cancelled_prescription_ends_its_series_without_issuing(formulary):
    series = started(2)
    services.prescription_cancel(clinic=None, prescription_id=series.origin_id, reason="Stopped treatment")

    assert repeats.repeat_series_issue_due(today=series.next_due_on) == []

    series.refresh_from_db()
    assert (series.status, series.next_due_on) == ("stopped", None)
    assert series.status_reason == f"prescription #{series.origin_id} was cancelled"
    assert not Prescription.objects.filter(previous_id=series.origin_id).exists()


def test_a_schedule_2_drug_with_repeats_is_rejected_by_the_checks_and_gets_no_series(formulary):
    prescription = scenario(code="324907005", repeats=1, **adhd_context())
    services.prescription_run_checks(prescription_id=prescription.pk)

    assert Prescription.objects.get(pk=prescription.pk).status == Status.REJECTED
    assert repeats.repeat_series_start(prescription_id=prescription.pk) is None
    assert not RepeatSeries.objects.exists()


def test_the_admin_pauses_a_series_through_the_service(formulary, admin_client):
    series = started(2)
    response = admin_client.post(
        "/admin/prescriptions/repeatseries/", {"action": "pause", "_selected_action": [series.pk]}
    )
    assert response.status_code == 302
    series.refresh_from_db()
    assert (series.status, series.status_reason) == (
        "paused",
        f"paused by user:{admin_client.session['_auth_user_id']}",
    )


# --- Titration ----------------------------------------------------------------------------------


def test_a_titration_step_posted_through_the_api_is_linked_to_the_previous_prescription(
    clinic_a, patient_a, paracetamol
):
    first = clinic_a.api.post(
        "/api/v1/prescriptions/",
        prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol),
        format="json",
        HTTP_IDEMPOTENCY_KEY="t-1",
    ).json()
    body = prescription_body(
        patient_a.pk,
        clinic_a.prescriber.pk,
        paracetamol,
        titration_of=first["id"],
        item={"dose_text": "Take two tablets four times a day", "quantity": "56"},
    )
    response = clinic_a.api.post("/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="t-2")

    assert response.status_code == 201, response.content
    assert (response.json()["previous"], response.json()["link_kind"]) == (first["id"], "titration")


def test_a_titration_of_another_patients_or_clinics_prescription_is_refused_and_nothing_is_created(
    clinic_a, clinic_b, patient_a, paracetamol, formulary
):
    other_patient = scenario(clinic=clinic_a.clinic, prescriber_object=clinic_a.prescriber)
    other_clinic = scenario(clinic=clinic_b.clinic, prescriber_object=clinic_b.prescriber)
    before = Prescription.objects.count()
    answers = [
        clinic_a.api.post(
            "/api/v1/prescriptions/",
            prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol, titration_of=previous.pk),
            format="json",
            HTTP_IDEMPOTENCY_KEY=f"bad-{previous.pk}",
        )
        for previous in (other_patient, other_clinic)
    ]
    assert [answer.status_code for answer in answers] == [400, 400]
    assert answers[0].json()["errors"] == [
        {
            "pointer": "#/titration_of",
            "detail": "A titration step must follow the same patient's prescription.",
        }
    ]
    assert answers[1].json()["errors"] == [{"pointer": "#/titration_of", "detail": "No such prescription."}]
    assert Prescription.objects.count() == before
