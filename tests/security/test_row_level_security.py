"""PostgreSQL row-level security is the floor under the app's clinic scoping."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.utils import ProgrammingError

from accounts.tenancy import TENANT_ROLE, tenant_scope_enter, tenant_scope_leave
from events.models import Event
from patients import selectors as patient_selectors
from patients.models import Allergy, Patient
from prescriptions.models import Prescription, PrescriptionItem
from prescriptions.services import prescription_create
from tests.patients.factories import AllergyFactory, PatientFactory
from tests.prescriptions.factories import MedicationFactory

pytestmark = pytest.mark.django_db


def _prescription_for(setup, patient) -> Prescription:  # type: ignore[no-untyped-def]
    item = {
        "medication": MedicationFactory(),
        "dose_text": "one",
        "quantity": 1,
        "unit": "tablet",
        "days_supply": 1,
    }
    return prescription_create(
        clinic=setup.clinic, patient=patient, prescriber=setup.prescriber, items=[item]
    )


def _tables_with_a_clinic_column() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name = 'clinic_id'"
        )
        return {row[0] for row in cursor.fetchall()}


def _forced_rls_tables() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            # 'p': a partitioned table (the event archive), whose policies apply through it
            "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND relrowsecurity AND relforcerowsecurity"
        )
        return {row[0] for row in cursor.fetchall()}


def _tables_owned_through_a_clinic_owned_parent() -> set[str]:
    """Tables whose rows belong to a patient, prescription or dispatch, found by their columns."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND column_name IN ('patient_id', 'prescription_id', 'dispatch_id', 'payment_id')"
        )
        return {row[0] for row in cursor.fetchall()}


def test_every_table_with_a_clinic_column_has_forced_row_level_security():
    assert _tables_with_a_clinic_column() - _forced_rls_tables() == set()
    assert {"patients_allergy", "prescriptions_prescriptionitem", "pharmacy_dispatch"} <= _forced_rls_tables()


def test_every_table_owned_through_a_patient_prescription_or_dispatch_has_forced_row_level_security():
    assert _tables_owned_through_a_clinic_owned_parent() - _forced_rls_tables() == set()


def test_the_tenant_role_cannot_bypass_row_level_security():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = %s", [TENANT_ROLE]
        )
        assert cursor.fetchone() == (False, False, False)
        cursor.execute("SELECT count(*) FROM pg_tables WHERE tableowner = %s", [TENANT_ROLE])
        assert cursor.fetchone() == (0,)


def test_a_clinic_scoped_transaction_sees_no_foreign_rows_even_unfiltered(clinic_a, clinic_b):
    own = PatientFactory(clinic=clinic_b.clinic)
    foreign = PatientFactory(clinic=clinic_a.clinic)
    AllergyFactory(patient=foreign)
    _prescription_for(clinic_a, foreign)

    with transaction.atomic():
        tenant_scope_enter(clinic_id=clinic_b.clinic.pk)
        visible_patients = list(Patient.objects.values_list("pk", flat=True))
        visible_allergies = Allergy.objects.count()
        visible_prescriptions = Prescription.objects.count()
        visible_items = PrescriptionItem.objects.count()
        foreign_by_pk = Patient.objects.filter(pk=foreign.pk).exists()
        transaction.set_rollback(True)

    assert visible_patients == [own.pk]
    assert (visible_allergies, visible_prescriptions, visible_items, foreign_by_pk) == (0, 0, 0, False)


def test_the_tenant_cannot_widen_its_own_scope_to_the_system_value(clinic_a, clinic_b):
    PatientFactory(clinic=clinic_a.clinic)

    with transaction.atomic():
        tenant_scope_enter(clinic_id=clinic_b.clinic.pk)
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('app.clinic_id', '*', true)")
        visible = Patient.objects.count()
        transaction.set_rollback(True)

    assert visible == 0


def test_the_tenant_cannot_write_a_row_for_another_clinic(clinic_a, clinic_b):
    with transaction.atomic():
        tenant_scope_enter(clinic_id=clinic_b.clinic.pk)
        with pytest.raises(ProgrammingError, match="row-level security"), transaction.atomic():
            PatientFactory(clinic=clinic_a.clinic)
        transaction.set_rollback(True)

    assert Patient.objects.filter(clinic=clinic_a.clinic).count() == 0


def test_the_tenant_cannot_update_or_delete_foreign_rows(clinic_a, clinic_b):
    foreign = PatientFactory(clinic=clinic_a.clinic, sex="female")
    AllergyFactory(patient=foreign)

    with transaction.atomic():
        tenant_scope_enter(clinic_id=clinic_b.clinic.pk)
        updated = Patient.objects.filter(pk=foreign.pk).update(sex="male")
        deleted = Allergy.objects.filter(patient_id=foreign.pk).delete()[0]
        tenant_scope_leave()  # committed savepoint: back to the system path to check

    assert (updated, deleted) == (0, 0)
    assert Patient.objects.get(pk=foreign.pk).sex == "female"
    assert Allergy.objects.filter(patient_id=foreign.pk).count() == 1


def test_the_api_with_its_scoping_removed_still_lists_no_foreign_patients(clinic_a, clinic_b, monkeypatch):
    own = PatientFactory(clinic=clinic_b.clinic)
    foreign = PatientFactory(clinic=clinic_a.clinic)
    # Deliberately break the app-level scoping: every clinic's patients.
    monkeypatch.setattr(patient_selectors, "patient_list", lambda *, clinic: Patient.objects.all())

    listed = clinic_b.api.get("/api/v1/patients/")
    detail = clinic_b.api.get(f"/api/v1/patients/{foreign.pk}/")

    assert listed.status_code == 200
    assert [row["id"] for row in listed.json()["results"]] == [own.pk]
    assert detail.status_code == 404


def test_foreign_events_are_invisible_to_a_tenant(clinic_a, clinic_b):
    patient = PatientFactory(clinic=clinic_a.clinic)
    _prescription_for(clinic_a, patient)
    assert Event.objects.filter(clinic_id=clinic_a.clinic.pk).count() == 1

    with transaction.atomic():
        tenant_scope_enter(clinic_id=clinic_b.clinic.pk)
        visible = Event.objects.exclude(clinic_id=clinic_b.clinic.pk).count()
        transaction.set_rollback(True)

    assert visible == 0


def test_after_an_api_request_the_test_connection_is_back_on_the_system_path(clinic_a, clinic_b):
    PatientFactory(clinic=clinic_a.clinic)

    clinic_b.api.get("/api/v1/patients/")

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user <> %s, current_setting('app.clinic_id')", [TENANT_ROLE])
        assert cursor.fetchone() == (True, "*")
    assert Patient.objects.filter(clinic=clinic_a.clinic).count() == 1
