"""`make demo`'s staff accounts stay usable with 2FA: their TOTP URIs are in demo-credentials.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

from patients.models import Clinic
from tests.patients.factories import PatientFactory

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from demo_totp import current_code  # noqa: E402

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_credentials(settings, tmp_path) -> dict:  # type: ignore[no-untyped-def]
    settings.VAR_DIR = tmp_path
    call_command("seed_demo", verbosity=0)
    call_command("seed_demo", verbosity=0)  # safe to run twice: same devices, same URIs
    return json.loads((tmp_path / "demo-credentials.json").read_text())


def test_every_demo_staff_account_signs_in_with_its_password_and_current_code(demo_credentials):
    staff = demo_credentials["staff"]

    assert {name: account["role"] for name, account in staff.items()} == {
        "admin": "admin",
        "pharmacist": "pharmacist",
        "support": "support",
        "operator": "operator",
        "finance": "finance",
    }
    for username, account in staff.items():
        client = Client()
        response = client.post(
            "/admin/login/?next=/admin/",
            {
                "username": username,
                "password": account["password"],
                "otp_token": current_code(account["totp_uri"]),
            },
        )
        assert response.status_code == 302, username
        assert client.get("/admin/").status_code == 200, username


def test_the_demo_support_user_sees_only_the_riverside_clinic(demo_credentials):
    PatientFactory(clinic=Clinic.objects.get(name="Lakeshore Family Health"))
    account = demo_credentials["staff"]["support"]
    client = Client()
    client.post(
        "/admin/login/",
        {
            "username": "support",
            "password": account["password"],
            "otp_token": current_code(account["totp_uri"]),
        },
    )

    response = client.get("/admin/patients/patient/")

    clinics = [patient.clinic.name for patient in response.context["cl"].result_list]
    assert clinics == ["Riverside Neurodevelopmental Clinic"] * 2


def test_the_demo_seeds_one_dead_letter_and_one_enquiry_for_the_back_office(demo_credentials):
    from pharmacy.models import DeadLetter
    from prescriptions.models import Status
    from support.models import Enquiry

    letter = DeadLetter.objects.select_related("dispatch__prescription").get()
    enquiry = Enquiry.objects.select_related("assignee").get()

    assert letter.dispatch.prescription.status == Status.DEAD_LETTERED
    assert letter.resolved_at is None
    assert (enquiry.category, enquiry.status, enquiry.prescription_id, enquiry.assignee.username) == (
        "where_is_my_order",
        "open",
        letter.dispatch.prescription_id,
        "support",
    )
    assert enquiry.notes.count() == 1
