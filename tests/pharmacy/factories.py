import datetime
from typing import Any

import factory
from django.utils import timezone

from events.services import event_record
from pharmacy.models import (
    DeadLetter,
    Dispatch,
    GatewayCancellation,
    GatewayWebhookEvent,
    OrderAlert,
    Partner,
    PartnerCircuit,
    PartnerStock,
    StockFeedEvent,
)
from prescriptions import services
from prescriptions.models import Medication, Prescription, Status
from tests.patients.factories import PatientFactory, distinct_nhs_number
from tests.prescriptions.factories import PrescriptionFactory


def approved_prescription(setup, medication: Medication, **item) -> Prescription:  # type: ignore[no-untyped-def]
    """A prescription that passed its checks and was paid (so ready for dispatch), made through
    the services as the API and the Stripe webhook would; a controlled drug's stops at the
    pharmacist."""
    patient = PatientFactory(clinic=setup.clinic, nhs_number=distinct_nhs_number())
    prescription = services.prescription_create(
        clinic=setup.clinic,
        patient=patient,
        prescriber=setup.prescriber,
        issued_on=datetime.date(2026, 11, 20),
        items=[
            {
                "medication": medication,
                "dose_text": "One tablet twice a day",
                "quantity": 28,
                "unit": "tablet",
                "days_supply": 14,
                "quantity_words": "twenty eight",  # a controlled drug needs it (GB reg 15)
                **item,
            }
        ],
    )
    target = services.prescription_run_checks(prescription_id=prescription.pk)
    # A controlled drug always waits for a pharmacist: it is returned there, unpaid.
    expected = Status.AWAITING_PHARMACIST if medication.is_controlled else Status.APPROVED
    assert target == expected, Prescription.objects.get(pk=prescription.pk).check_results
    if target == Status.APPROVED:
        # Dispatch takes only paid or NHS-funded prescriptions.
        assert services.prescription_transition(
            prescription_id=prescription.pk,
            to=Status.PAID,
            from_statuses=frozenset({Status.APPROVED}),
            event_type="prescription.paid",
            actor="test",
        )
    prescription.refresh_from_db()
    return prescription


def force_status(prescription: Prescription, status: str) -> None:
    """Put a prescription in a state the way a bug would: no guard, but still an event."""
    from django.db import transaction

    with transaction.atomic():
        Prescription.objects.filter(pk=prescription.pk).update(status=status)
        event_record(
            aggregate_type="prescription",
            aggregate_id=prescription.pk,
            clinic_id=prescription.clinic_id,
            type="test.forced",
            payload={"to": status},
        )


RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
US_AMOXICILLIN = "308191"  # RxNorm: amoxicillin 250 MG Oral Capsule (on the US formulary)
US_NPI = "1234567893"  # the CMS example NPI
US_DEA = "AB1234563"  # check digit valid


def us_prescription(
    *, patient: dict[str, Any] | None = None, prescriber: dict[str, Any] | None = None, **item: Any
) -> Prescription:
    """A US prescription for one RxNorm product, received (not checked), for encoding as the
    Scriptline profile; `patient`, `prescriber` and `item` override their fields."""
    from tests.patients.factories import ClinicFactory
    from tests.prescriptions.factories import MedicationFactory, PrescriberFactory

    clinic = ClinicFactory(jurisdiction="US", currency="USD", ods_code="", managing_organisation_ods_code="")
    patient_fields = {
        "given_name": "Stacey",
        "family_name": "Twitchett",
        "birth_date": datetime.date(1948, 4, 30),
        "sex": "female",
        "address_line": "10 Heathfield Ave",
        "city": "Albany",
        "region": "NY",
        "postal_code": "12207",
        "phone": "518 555 0100",
        "email": "stacey@example.org",
        **(patient or {}),
    }
    us_patient = PatientFactory(clinic=clinic, nhs_number="", nhs_number_index="", **patient_fields)
    us_prescriber = PrescriberFactory(
        clinic=clinic,
        **{
            "registration_body": "NPI",
            "registration_number": US_NPI,
            "dea_number": US_DEA,
            "licensed_states": ["NY"],
            **(prescriber or {}),
        },
    )
    medication = MedicationFactory(
        code_system=RXNORM,
        code=US_AMOXICILLIN,
        name="Amoxicillin",
        strength="250mg",
        form="capsule",
        unit="capsule",
    )
    return services.prescription_create(
        clinic=clinic,
        patient=us_patient,
        prescriber=us_prescriber,
        issued_on=datetime.date(2026, 11, 20),
        note="Synthetic test prescription",
        items=[
            {
                "medication": medication,
                "dose_text": "One capsule three times a day",
                "quantity": 21,
                "unit": "capsule",
                "days_supply": 7,
                **item,
            }
        ],
    )


class DispatchFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dispatch

    prescription = factory.SubFactory(PrescriptionFactory)


class DeadLetterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DeadLetter

    dispatch = factory.SubFactory(DispatchFactory)
    error = "gateway unavailable: HTTP 503"
    attempts = 8


class GatewayWebhookEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GatewayWebhookEvent

    event_id = factory.Sequence(lambda n: f"evt_{n}")
    type = "order.dispensed"
    order_id = factory.Sequence(lambda n: f"ORD-{n}")
    payload = factory.LazyAttribute(lambda event: {"order_id": event.order_id})


class GatewayCancellationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GatewayCancellation

    dispatch = factory.SubFactory(DispatchFactory)
    reason = "The clinic cancelled the prescription."
    requested_by = "client:test"


class OrderAlertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OrderAlert

    dispatch = factory.SubFactory(DispatchFactory)
    reason = "No progress from the pharmacy for two days."
    gateway_status = "acknowledged"


class PartnerCircuitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PartnerCircuit

    partner = factory.Sequence(lambda n: f"partner-{n}")


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Partner

    code = factory.Sequence(lambda n: f"partner-{n}")
    name = factory.Sequence(lambda n: f"Partner pharmacy {n}")
    base_url = "http://127.0.0.1:8765"
    countries = factory.LazyFunction(lambda: ["GB"])


class PartnerStockFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PartnerStock

    partner = factory.SubFactory(PartnerFactory)
    product_code = factory.Sequence(lambda n: f"3222360{n:02d}")
    quantity = 100
    source = "csv"
    updated_at = factory.LazyFunction(timezone.now)


class StockFeedEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StockFeedEvent

    partner = factory.SubFactory(PartnerFactory)
    event_id = factory.Sequence(lambda n: f"stock_{n}")
    items = 3
