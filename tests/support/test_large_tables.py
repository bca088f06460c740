"""Changelists and hot reads at volume: no full COUNT(*), a query count that does not grow with
the rows shown, and plans that use the indexes made for them (EXPLAIN, sequential scans off)."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from events.models import Event
from patients import phi
from patients.models import Patient
from prescriptions.models import Medication, Prescription, Status
from support import large_tables
from support.large_tables import EstimatedCountPaginator, distinct_column_values, planner_row_estimate

# Reference and configuration tables: their size follows staff and the formulary, not traffic.
SMALL_TABLES = {
    "auth.Group",
    "auth.User",
    "billing.ClaimBatch",
    "billing.NhsChargeRate",
    "django_celery_beat.ClockedSchedule",
    "django_celery_beat.CrontabSchedule",
    "django_celery_beat.IntervalSchedule",
    "django_celery_beat.PeriodicTask",
    "django_celery_beat.SolarSchedule",
    "events.ClinicWebhookEndpoint",
    "oauth2_provider.Application",
    "otp_totp.TOTPDevice",
    "patients.Clinic",
    "patients.ClinicClient",
    "pharmacy.Partner",
    "prescriptions.AllergyClass",
    "prescriptions.FormularyRelease",
    "prescriptions.InteractionRule",
    "prescriptions.Medication",
    "prescriptions.PaediatricDoseRule",
    "prescriptions.PharmacistProfile",
    "prescriptions.Prescriber",
}


def _registered() -> list[tuple[str, admin.ModelAdmin]]:
    return sorted(
        ((model._meta.label, model_admin) for model, model_admin in admin.site._registry.items()),
        key=lambda pair: pair[0],
    )


def test_every_changelist_over_a_growing_table_skips_the_full_count():
    growing = {label: model_admin for label, model_admin in _registered() if label not in SMALL_TABLES}
    assert "events.Event" in growing
    assert "auditlog.LogEntry" in growing
    assert {
        label: model_admin.show_full_result_count for label, model_admin in growing.items()
    } == dict.fromkeys(growing, False)
    assert {label: model_admin.paginator for label, model_admin in growing.items()} == dict.fromkeys(
        growing, EstimatedCountPaginator
    )


def _changelist_queries(client, label: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    app_label, model_name = label.lower().split(".")
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse(f"admin:{app_label}_{model_name}_changelist"))
    assert response.status_code == 200, label
    return len(queries), response.context["cl"].result_count


@pytest.mark.django_db
def test_every_changelist_reads_in_a_constant_number_of_queries_for_one_row_or_twenty(admin_client):
    # Given one prescription (with its patient, events, dispatch, payment and access log row)
    call_command("bench_seed", prescriptions=1, patients=1)
    one = {label: _changelist_queries(admin_client, label) for label, _ in _registered()}
    # When twenty more arrive
    call_command("bench_seed", prescriptions=20, patients=20, seed=8)
    twenty = {label: _changelist_queries(admin_client, label) for label, _ in _registered()}

    # Then no changelist reads more queries, and the pages really did grow
    assert {label: queries for label, (queries, _) in twenty.items()} == {
        label: queries for label, (queries, _) in one.items()
    }
    for label in ["prescriptions.Prescription", "patients.Patient", "events.Event", "audit.PatientAccess"]:
        assert one[label][1] < twenty[label][1], label
    assert twenty["prescriptions.Prescription"][1] == 21


@pytest.mark.django_db
def test_the_paginator_counts_exactly_up_to_its_cap_then_asks_the_planner(monkeypatch):
    call_command("bench_seed", prescriptions=30, patients=3)
    queryset = Prescription.objects.all()
    assert EstimatedCountPaginator(queryset, 10).count == 30

    monkeypatch.setattr(large_tables, "COUNT_EXACT_UP_TO", 5)
    estimated = EstimatedCountPaginator(queryset, 10).count
    assert estimated >= 6
    assert estimated == max(6, planner_row_estimate(queryset))


@pytest.mark.django_db
def test_a_column_s_values_are_walked_from_its_index_in_order():
    call_command("bench_seed", prescriptions=40, patients=4)
    assert distinct_column_values(Event, "type") == sorted(set(Event.objects.values_list("type", flat=True)))


def _indexes_used(queryset) -> set[str]:  # type: ignore[no-untyped-def]
    """The indexes in the query's plan, with sequential scans and sorts priced out (the test
    tables are too small for the planner to prefer an index on its own)."""
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
        cursor.execute("RESET enable_seqscan")
        cursor.execute("RESET enable_sort")
    found: set[str] = set()

    def walk(node: dict) -> None:
        if "Index Name" in node:
            found.add(node["Index Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return found


@pytest.fixture
def seeded(db):  # type: ignore[no-untyped-def]
    # Enough rows that a clinic's prescriptions are a small share of the table.
    call_command("bench_seed", prescriptions=4000, patients=400)


# Django's name for the blind index column's db_index (patients migration 0002).
NHS_NUMBER_INDEX = "patients_patient_nhs_number_index_"


def test_the_hot_reads_use_their_indexes(seeded):
    patient = Patient.objects.order_by("pk").first()
    prescription = Prescription.objects.order_by("pk").first()
    plans = {
        # The pharmacist's queue: waiting prescriptions, oldest first.
        "prescriptio_status_dca3ba_idx": Prescription.objects.filter(
            status=Status.AWAITING_PHARMACIST
        ).order_by("id")[:100],
        # A clinic's API list, newest first.
        "prescriptio_clinic__e9ea71_idx": Prescription.objects.filter(clinic_id=patient.clinic_id).order_by(
            "-id"
        )[:50],
        # Support's search: an NHS number's blind index, and a tracking number.
        NHS_NUMBER_INDEX: Patient.objects.filter(
            nhs_number_index=phi.nhs_number_index(patient.nhs_number)
        ).order_by(),
        "prescription_tracking_number": Prescription.objects.filter(tracking_number="TRK1").order_by(),
        # A prescription's timeline, and the admin's event search by prescription id.
        "event_sequence_unique_per_aggregate": Event.objects.filter(
            aggregate_type="prescription", aggregate_id=prescription.pk
        ).order_by("sequence"),
        "event_aggregate_id": Event.objects.filter(aggregate_id=prescription.pk).order_by(),
    }
    assert {
        index: any(used.startswith(index) for used in _indexes_used(queryset))
        for index, queryset in plans.items()
    } == dict.fromkeys(plans, True), str(
        {index: _indexes_used(queryset) for index, queryset in plans.items()}
    )


@pytest.mark.django_db
def test_admin_searches_are_exact_index_lookups_and_refuse_nothing(admin_client):
    call_command("bench_seed", prescriptions=30, patients=3)
    prescription = Prescription.objects.order_by("pk").first()
    events = reverse("admin:events_event_changelist")

    found = admin_client.get(events, {"q": str(prescription.pk)}).context["cl"].result_list
    assert {event.aggregate_id for event in found} == {prescription.pk}
    assert len(found) == Event.objects.filter(aggregate_id=prescription.pk).count()
    by_type = admin_client.get(events, {"q": "prescription.received"}).context["cl"].result_list
    assert {event.type for event in by_type} == {"prescription.received"}
    for term in ["not-a-number", "9" * 30]:
        response = admin_client.get(events, {"q": term})
        assert response.status_code == 200
        assert list(response.context["cl"].result_list) == []

    # Across a relation: the related row is looked up first, then this table by its id.
    accesses = reverse("admin:audit_patientaccess_changelist")
    admin_client.get(reverse("admin:patients_patient_change", args=[prescription.patient_id]))
    mine = admin_client.get(accesses, {"q": "admin"}).context["cl"].result_list
    assert [access.staff_user.username for access in mine] == ["admin"]


@pytest.mark.django_db
def test_the_quick_action_checkbox_is_django_s_own_markup():
    call_command("bench_seed", prescriptions=2, patients=1)
    prescription = Prescription.objects.select_related("patient").order_by("pk").first()
    patient = prescription.patient
    for obj in [prescription, patient, Medication.objects.order_by("pk").first()]:
        model_admin = admin.site._registry[type(obj)]
        assert isinstance(model_admin, large_tables.QuickCheckboxAdminMixin)
        assert model_admin.action_checkbox(obj) == admin.ModelAdmin.action_checkbox(model_admin, obj)
        assert 'class="action-select"' in model_admin.action_checkbox(obj)


@pytest.mark.django_db
def test_lists_leave_out_the_identifiers_they_do_not_show_and_still_show_the_rest(admin_client):
    call_command("bench_seed", prescriptions=3, patients=1)
    patient = Patient.objects.get()
    lists = {
        "patients_patient": phi.phi_not_shown(shown=("family_name", "given_name", "birth_date")),
        "prescriptions_prescription": phi.phi_not_shown(shown=("given_name", "family_name")),
        "audit_patientaccess": list(phi.PHI_FIELDS),
    }
    admin_client.get(reverse("admin:patients_patient_change", args=[patient.pk]))  # an access row
    deferred = {}
    for name, expected in lists.items():
        response = admin_client.get(reverse(f"admin:{name}_changelist"))
        row = response.context["cl"].result_list[0]
        shown = row if name == "patients_patient" else row.patient
        deferred[name] = sorted(shown.get_deferred_fields() & set(phi.PHI_FIELDS))
        assert sorted(expected) == deferred[name], name
        if name != "audit_patientaccess":
            assert patient.family_name in response.content.decode(), name
    assert deferred["audit_patientaccess"] == sorted(phi.PHI_FIELDS)
