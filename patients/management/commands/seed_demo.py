"""Synthetic demo data: a GB and a US clinic, prescribers, patients, staff and API clients.

Every name and number here is invented. Safe to run more than once.
"""

import json
import secrets
from datetime import date
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice
from oauth2_provider.models import Application

from patients.models import Clinic, ClinicClient, Patient
from patients.services import patient_create
from pharmacy import routing
from pharmacy.models import Partner
from prescriptions.models import PharmacistProfile, Prescriber
from support import roles
from support.services import staff_assign_clinic, staff_totp_enrol

DEMO_PASSWORD = "scriptline-demo"


class Command(BaseCommand):
    help = "Create synthetic demo data and write var/demo-credentials.json."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--mailorder-url", default="http://127.0.0.1:8766")

    def handle(self, *args: object, **options: str) -> None:
        call_command("load_formulary", verbosity=0)
        with transaction.atomic():
            clinic = self._clinic("Riverside Neurodevelopmental Clinic", "GB", "GBP", "Y12345")
            us_clinic = self._clinic("Lakeshore Family Health", "US", "USD", "")
            prescriber = self._prescriber(clinic, "Ada", "Hartley", "GMC", "7000001")
            us_prescriber = self._prescriber(us_clinic, "Jordan", "Reyes", "NPI", "1234567893")
            # What the controlled-drug rules check; invented, like everything here.
            Prescriber.objects.filter(pk=prescriber.pk).update(
                address="1 Example Street, Leeds LS2 9JT",
                controlled_drugs_authorised=True,
                # What an NHS EPS message says about the prescriber (invented SDS identities).
                sds_user_id="555000000001",
                sds_role_profile_id="200000000001",
                sds_job_role_code="R8000",
            )
            Prescriber.objects.filter(pk=us_prescriber.pk).update(
                address="10 Main St, Albany NY 12207",
                controlled_drugs_authorised=True,
                licensed_states=["NY"],
                dea_number="AB1234563",
            )
            self._patients(clinic)
            staff = self._staff(clinic)
            client_id, client_secret = self._client(clinic, "Riverside demo integration")
            us_client_id, us_client_secret = self._client(us_clinic, "Lakeshore demo integration")
            self._partners(options["mailorder_url"])
        credentials = {
            "base_url": options["base_url"],
            "client_id": client_id,
            "client_secret": client_secret,
            "clinic_id": clinic.pk,
            "prescriber_id": prescriber.pk,
            "us_clinic": {
                "client_id": us_client_id,
                "client_secret": us_client_secret,
                "prescriber_id": us_prescriber.pk,
            },
            "staff": staff,
        }
        path = Path(settings.VAR_DIR) / "demo-credentials.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(credentials, indent=2) + "\n")
        path.chmod(0o600)
        # The back office's samples: a dead letter for the dashboard, an enquiry for support.
        call_command("seed_back_office", verbosity=0)
        self.stdout.write(f"demo data ready; API credentials in {path}")

    def _clinic(self, name: str, jurisdiction: str, currency: str, ods: str) -> Clinic:
        clinic, _ = Clinic.objects.get_or_create(
            name=name,
            defaults={
                "jurisdiction": jurisdiction,
                "currency": currency,
                "ods_code": ods,
                "address": "1 Example Street, Demo Town",
            },
        )
        if jurisdiction == "GB":
            # What an NHS EPS message says about the prescribing organisation (invented).
            Clinic.objects.filter(pk=clinic.pk).update(
                phone="0113 496 0000",
                address_line="1 Example Street",
                city="Leeds",
                district="West Yorkshire",
                postal_code="LS2 9JT",
                managing_organisation_ods_code="QWO",
                managing_organisation_name="NHS West Yorkshire Integrated Care Board",
            )
        return clinic

    def _prescriber(self, clinic: Clinic, given: str, family: str, body: str, number: str) -> Prescriber:
        prescriber, _ = Prescriber.objects.get_or_create(
            clinic=clinic,
            registration_body=body,
            registration_number=number,
            defaults={"given_name": given, "family_name": family},
        )
        return prescriber

    def _patients(self, clinic: Clinic) -> None:
        if Patient.objects.filter(clinic=clinic).exists():
            return
        patient_create(
            clinic=clinic,
            given_name="Sam",
            family_name="Testperson",
            birth_date=date(1990, 4, 2),
            sex="female",
            nhs_number="9434765919",
            address_line="2 Sample Road",
            city="Leeds",
            postal_code="LS1 1AA",
            email="sam@example.invalid",
            allergies=[{"substance": "penicillin", "reaction": "rash"}],
            actor="seed",
        )
        patient_create(
            clinic=clinic,
            given_name="Alex",
            family_name="Democase",
            birth_date=date(2008, 9, 15),
            sex="male",
            address_line="3 Fixture Lane",
            city="York",
            postal_code="YO1 7HH",
            actor="seed",
        )

    def _staff(self, clinic: Clinic) -> dict[str, dict[str, str]]:
        """Demo staff, one per role, each with a TOTP device (the admin requires one).

        Returns username -> password and otpauth:// URI, for var/demo-credentials.json.
        """
        accounts = {
            "admin": (roles.ADMIN, ""),
            "pharmacist": (roles.PHARMACIST, "2087654"),
            "support": (roles.SUPPORT, ""),
            "operator": (roles.OPERATOR, ""),
            "finance": (roles.FINANCE, ""),
        }
        credentials = {}
        for username, (role, registration) in accounts.items():
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": True, "is_superuser": username == "admin"}
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
            user.groups.add(Group.objects.get(name=role))
            if registration:
                # Only a pharmacist with a recorded registration number may decide.
                PharmacistProfile.objects.update_or_create(
                    user=user, defaults={"registration_body": "GPhC", "registration_number": registration}
                )
            device = TOTPDevice.objects.filter(user=user).first() or staff_totp_enrol(user=user)
            credentials[username] = {
                "password": DEMO_PASSWORD,
                "role": role,
                "totp_uri": device.config_url,
            }
        # Support staff work for some clinics only: this one sees Riverside's patients alone.
        staff_assign_clinic(user=User.objects.get(username="support"), clinic=clinic)
        return credentials

    def _partners(self, mailorder_url: str) -> None:
        """Two pharmacy partners: the FHIR gateway (GB and US, every schedule, a fee per item) and
        the US mail-order pharmacy (no controlled drugs, no fee), so routing sends the US
        non-controlled sample to the mail-order pharmacy and everything else to the gateway."""
        Partner.objects.filter(code="gateway").update(fee_per_item_minor=300)
        Partner.objects.update_or_create(
            code="mailorder",
            defaults={
                "name": "Lakeshore Mail-Order Pharmacy (US)",
                "adapter": Partner.Adapter.MAILORDER,
                "status_by": Partner.StatusBy.POLLING,
                "base_url": mailorder_url,
                "stock_csv_url": f"{mailorder_url}/v2/inventory.csv",
                "countries": ["US"],
                "us_states": list(routing.US_STATES),
                "controlled_schedules": [],
                "fee_per_item_minor": 0,
                "capacity": 500,
            },
        )

    def _client(self, clinic: Clinic, name: str) -> tuple[str, str]:
        secret = secrets.token_urlsafe(32)
        application = Application.objects.filter(name=name).first()
        if application is None:
            application = Application(
                name=name,
                client_type=Application.CLIENT_CONFIDENTIAL,
                authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
            )
        # DOT stores only a hash of the secret, so the demo issues a fresh one every run.
        application.client_secret = secret
        application.save()
        ClinicClient.objects.get_or_create(application=application, defaults={"clinic": clinic})
        return application.client_id, secret
