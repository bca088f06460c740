"""Demo data for the back office: one dead letter for the operator's dashboard and one "where is
my order" enquiry about it for support. Invented, like the rest of the demo data; safe to run
more than once (it adds nothing when the demo clinic already has them)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from patients.models import Clinic, Patient
from pharmacy import services as pharmacy
from pharmacy.models import DeadLetter
from prescriptions import services
from prescriptions.models import Medication, Prescriber, Status
from support import enquiries
from support.models import Enquiry

CLINIC = "Riverside Neurodevelopmental Clinic"
PARACETAMOL = "322236009"


class Command(BaseCommand):
    help = "Create a sample dead letter and a sample enquiry for the demo clinic (after seed_demo)."

    def handle(self, *args: object, **options: object) -> None:
        clinic = Clinic.objects.get(name=CLINIC)
        patient = Patient.objects.filter(clinic=clinic).order_by("id").first()
        if patient is None:
            raise CommandError(f"{CLINIC} has no patients: run seed_demo first.")
        support = User.objects.get(username="support")
        letter = DeadLetter.objects.filter(dispatch__prescription__clinic=clinic).first()
        if letter is None:
            letter = self._dead_letter(clinic, patient)
        prescription_id = letter.dispatch.prescription_id
        if not Enquiry.objects.filter(clinic=clinic).exists():
            enquiries.enquiry_open(
                patient_id=patient.pk,
                prescription_id=prescription_id,
                channel=Enquiry.Channel.PHONE,
                category=Enquiry.Category.WHERE_IS_MY_ORDER,
                note="Ordered three days ago and nothing has arrived; no shipping email either.",
                staff_user=support,
                assignee_id=support.pk,
            )
        self.stdout.write(
            f"back office demo: dead letter #{letter.pk}, enquiry about prescription #{prescription_id}"
        )

    def _dead_letter(self, clinic: Clinic, patient: Patient) -> DeadLetter:
        """A paid prescription whose dispatch ran out of attempts, made through the services.

        Every step is a guarded transition with its event, so when the worker later consumes
        those events each consumer finds the prescription already past its step and does nothing.
        """
        prescription = services.prescription_create(
            clinic=clinic,
            patient=patient,
            prescriber=Prescriber.objects.filter(clinic=clinic).earliest("pk"),
            items=[
                {
                    "medication": Medication.objects.get(code=PARACETAMOL),
                    "dose_text": "Take one or two tablets up to four times a day",
                    "quantity": 32,
                    "unit": "tablet",
                    "days_supply": 8,
                }
            ],
            actor="seed",
        )
        for to, event_type in (
            (Status.APPROVED, "prescription.approved"),
            (Status.PAID, "prescription.paid"),
        ):
            services.prescription_transition(
                prescription_id=prescription.pk, to=to, event_type=event_type, actor="seed"
            )
        with transaction.atomic():
            # One transaction: the send that dispatch_create queues after commit finds the
            # dispatch already dead-lettered and does nothing.
            dispatch = pharmacy.dispatch_create(prescription_id=prescription.pk)
            if dispatch is None:
                raise CommandError(f"prescription #{prescription.pk} got no dispatch.")
            letter = pharmacy.dispatch_dead_letter(
                dispatch_id=dispatch.pk, error="gateway unavailable: HTTP 503 after 8 attempts (demo)"
            )
        if letter is None:
            raise CommandError(f"dispatch #{dispatch.pk} was not dead-lettered.")
        return letter
