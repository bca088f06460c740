"""Staff roles, per-clinic assignments and who may decide on a prescription."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django_otp.plugins.otp_totp.models import TOTPDevice

from common.errors import NotAllowed
from patients.models import Patient
from prescriptions import services
from prescriptions.models import PharmacistReview, Prescription, Status
from support import roles
from support.services import staff_assign_clinic, staff_can_decide, staff_clinics
from tests.patients.factories import ClinicFactory, PatientFactory
from tests.prescriptions.factories import PharmacistProfileFactory
from tests.support.factories import StaffClient, StaffFactory, pharmacist_create

pytestmark = pytest.mark.django_db


def group_permissions(role: str) -> set[str]:
    return {
        f"{app_label}.{codename}"
        for app_label, codename in Group.objects.get(name=role).permissions.values_list(
            "content_type__app_label", "codename"
        )
    }


def logged_in(user) -> StaffClient:  # type: ignore[no-untyped-def]
    client = StaffClient()
    client.force_login(user)
    return client


def awaiting_prescription(methylphenidate) -> Prescription:  # type: ignore[no-untyped-def]
    """A lawful Schedule 2 prescription for an eligible patient: it waits for a pharmacist."""
    from tests.prescriptions.test_admin import awaiting

    return awaiting(code=methylphenidate.code)


# --- roles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(roles.ROLE_PERMISSIONS))
def test_the_migration_gives_each_role_exactly_its_listed_permissions(role):
    assert group_permissions(role) == set(roles.ROLE_PERMISSIONS[role])


def test_only_the_pharmacist_role_may_record_a_review_and_no_role_may_edit_clinical_data():
    clinical_writes = {
        f"{app}.{verb}_{model}"
        for app, model in [
            ("patients", "patient"),
            ("patients", "allergy"),
            ("patients", "currentmedication"),
            ("prescriptions", "prescription"),
            ("prescriptions", "prescriptionitem"),
            ("prescriptions", "medication"),
        ]
        for verb in ("add", "change", "delete")
    }
    holders = {
        role
        for role in roles.ROLE_PERMISSIONS
        if "prescriptions.add_pharmacistreview" in group_permissions(role)
    }

    assert holders == {roles.PHARMACIST}
    assert {role: group_permissions(role) & clinical_writes for role in roles.ROLE_PERMISSIONS} == {
        role: set() for role in roles.ROLE_PERMISSIONS
    }


def test_finance_and_operators_cannot_open_patient_records():
    patient = PatientFactory()
    for role in (roles.FINANCE, roles.OPERATOR):
        client = logged_in(StaffFactory(role=role))

        assert client.get("/admin/patients/patient/").status_code == 403
        assert client.get(f"/admin/patients/patient/{patient.pk}/change/").status_code == 403


def test_support_staff_cannot_change_a_patient_or_a_prescription_in_the_admin(methylphenidate):
    prescription = awaiting_prescription(methylphenidate)
    patient = prescription.patient
    support = StaffFactory(role=roles.SUPPORT)
    staff_assign_clinic(user=support, clinic=prescription.clinic)
    client = logged_in(support)
    before = Patient.objects.filter(pk=patient.pk).values().get()

    page = client.get(f"/admin/patients/patient/{patient.pk}/change/")
    post = client.post(
        f"/admin/patients/patient/{patient.pk}/change/",
        {"given_name": "Changed", "family_name": "Changed", "birth_date": "2000-01-01", "sex": "male"},
    )
    prescription_post = client.post(
        f"/admin/prescriptions/prescription/{prescription.pk}/change/", {"note": "x"}
    )

    assert page.status_code == 200
    assert 'name="given_name"' not in page.content.decode()  # read-only view, no inputs
    assert post.status_code == 403
    assert prescription_post.status_code == 403
    assert Patient.objects.filter(pk=patient.pk).values().get() == before


# --- per-clinic assignment (django-guardian) ----------------------------------------------------


def test_support_staff_assigned_to_clinic_a_see_only_clinic_a_patients_and_prescriptions(methylphenidate):
    mine = awaiting_prescription(methylphenidate)
    theirs = awaiting_prescription(methylphenidate)
    support = StaffFactory(role=roles.SUPPORT)
    staff_assign_clinic(user=support, clinic=mine.clinic)
    client = logged_in(support)

    patients = client.get("/admin/patients/patient/")
    prescriptions = client.get("/admin/prescriptions/prescription/")
    foreign_patient = client.get(f"/admin/patients/patient/{theirs.patient_id}/change/")
    foreign_prescription = client.get(f"/admin/prescriptions/prescription/{theirs.pk}/change/")

    assert [patient.pk for patient in patients.context["cl"].result_list] == [mine.patient_id]
    assert [prescription.pk for prescription in prescriptions.context["cl"].result_list] == [mine.pk]
    # The admin treats an object outside the queryset as missing: back to the index.
    assert foreign_patient.status_code == 302
    assert foreign_patient["Location"] == "/admin/"
    assert foreign_prescription.status_code == 302


def test_support_staff_assigned_to_no_clinic_see_no_patients():
    PatientFactory()
    client = logged_in(StaffFactory(role=roles.SUPPORT))

    response = client.get("/admin/patients/patient/")

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


def test_roles_with_the_role_wide_clinic_permission_work_for_every_clinic():
    clinics = {ClinicFactory().pk, ClinicFactory().pk}

    assert set(staff_clinics(user=pharmacist_create()).values_list("pk", flat=True)) == clinics
    assert list(staff_clinics(user=StaffFactory(role=roles.SUPPORT))) == []


# --- who may decide ------------------------------------------------------------------------------


def test_a_registered_pharmacist_can_decide():
    assert staff_can_decide(pharmacist_create()) is True


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"role": roles.PHARMACIST}, "no profile"),
        ({"role": roles.PHARMACIST, "registration": ""}, "blank registration"),
        ({"role": roles.SUPPORT, "registration": "GPhC 2087654"}, "not a pharmacist"),
        ({"registration": "GPhC 2087654", "is_superuser": True}, "a superuser"),
        ({"role": roles.PHARMACIST, "registration": "GPhC 2087654", "is_active": False}, "deactivated"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_nobody_else_can_decide(kwargs, why):
    assert staff_can_decide(StaffFactory(**kwargs)) is False, why


def test_a_pharmacist_without_a_registration_cannot_approve_and_nothing_is_recorded(methylphenidate):
    prescription = awaiting_prescription(methylphenidate)
    unregistered = StaffFactory(role=roles.PHARMACIST)

    with pytest.raises(NotAllowed) as raised:
        services.prescription_review(
            prescription_id=prescription.pk, pharmacist=unregistered, decision="approved", reason="Fine"
        )
    page = logged_in(unregistered).post(
        f"/admin/prescriptions/prescription/{prescription.pk}/review/",
        {"decision": "approved", "reason": "Fine"},
    )

    assert raised.value.code == "not-a-registered-pharmacist"
    assert page.status_code == 403
    assert PharmacistReview.objects.count() == 0
    assert Prescription.objects.get(pk=prescription.pk).status == Status.AWAITING_PHARMACIST


def test_recording_a_registration_lets_the_pharmacist_approve(methylphenidate):
    prescription = awaiting_prescription(methylphenidate)
    pharmacist = StaffFactory(role=roles.PHARMACIST)
    PharmacistProfileFactory(user=pharmacist, registration_body="GPhC", registration_number="2011111")

    review = services.prescription_review(
        prescription_id=prescription.pk, pharmacist=pharmacist, decision="approved", reason="Dose checked"
    )

    assert review.pharmacist == pharmacist
    assert Prescription.objects.get(pk=prescription.pk).status == Status.APPROVED


# --- TOTP enrolment -----------------------------------------------------------------------------


def test_the_enrol_command_replaces_the_device_and_prints_its_provisioning_uri():
    user = StaffFactory(username="casey")
    old = user.totpdevice_set.get()
    out = io.StringIO()

    call_command("staff_totp_enrol", "casey", stdout=out)

    device = TOTPDevice.objects.get(user=user)
    assert device.pk != old.pk
    assert device.confirmed is True
    assert out.getvalue().strip() == device.config_url
    assert out.getvalue().startswith("otpauth://totp/Scriptline%3Acasey?secret=")
