"""Billing test helpers: prescriptions made through the services, the Stripe simulator, and
signed webhook delivery to our endpoint."""

from __future__ import annotations

import datetime
import json
import time

import factory
from django.test import Client

from billing.models import (
    CancellationRequest,
    ClaimBatch,
    ClaimItem,
    NhsCharge,
    NhsChargeRate,
    Payment,
    Refund,
    StripeEvent,
)
from common.signing import signature_header
from prescriptions import services
from prescriptions.formulary import formulary_load
from prescriptions.models import FormularyRelease, Medication, Prescription, Status
from tests.conftest import FORMULARY_FILE
from tests.patients.factories import PatientFactory, distinct_nhs_number
from tests.prescriptions.factories import PrescriptionFactory, PrescriptionItemFactory

WEBHOOK_URL = "/webhooks/stripe/"
SECRET = "whsec_scriptline_simulator"


def approved_prescription(setup, medication: Medication, *, quantity: int = 28, **fields) -> Prescription:  # type: ignore[no-untyped-def]
    """A prescription that passed its checks (status approved), as the intake API makes it."""
    if not FormularyRelease.objects.exists():
        formulary_load(path=FORMULARY_FILE)  # the checks fail closed without it
    patient = fields.pop("patient", None) or PatientFactory(
        clinic=setup.clinic, nhs_number=distinct_nhs_number()
    )
    prescription = services.prescription_create(
        clinic=setup.clinic,
        patient=patient,
        prescriber=setup.prescriber,
        issued_on=fields.pop("issued_on", datetime.date(2026, 11, 20)),
        items=[
            {
                "medication": medication,
                "dose_text": "One tablet twice a day",
                "quantity": quantity,
                "unit": "tablet",
                "days_supply": 14,
            }
        ],
        **fields,
    )
    outcome = services.prescription_run_checks(prescription_id=prescription.pk)
    prescription.refresh_from_db()
    assert outcome == Status.APPROVED, prescription.check_results
    return prescription


def deliver(
    body: str | bytes, *, secret: str = SECRET, timestamp: int | None = None, header: str | None = None
):  # type: ignore[no-untyped-def]
    payload = body.encode() if isinstance(body, str) else body
    signature = (
        header
        if header is not None
        else signature_header(secrets=[secret], body=payload, timestamp=timestamp or int(time.time()))
    )
    return Client().post(
        WEBHOOK_URL, payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
    )


def event_types(prescription: Prescription) -> list[str]:
    from events.models import Event

    return list(
        Event.objects.filter(aggregate_type="prescription", aggregate_id=prescription.pk)
        .order_by("sequence")
        .values_list("type", flat=True)
    )


def events_by_type(simulator, intent_id: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The simulator's event bodies for one PaymentIntent, keyed by type."""
    return {
        event["type"]: event["body"]
        for event in simulator.events()
        if json.loads(event["body"])["data"]["object"]["id"] == intent_id
    }


class PaymentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Payment

    prescription = factory.SubFactory(PrescriptionFactory)
    clinic = factory.SelfAttribute("prescription.clinic")
    amount_minor = 1250
    currency = "GBP"
    idempotency_key = factory.Sequence(lambda n: f"payment-{n}")


class RefundFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Refund

    payment = factory.SubFactory(PaymentFactory)
    amount_minor = factory.SelfAttribute("payment.amount_minor")
    idempotency_key = factory.Sequence(lambda n: f"refund-{n}")
    reason = "The prescription was cancelled."


class StripeEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StripeEvent

    event_id = factory.Sequence(lambda n: f"evt_test_{n}")
    type = "payment_intent.succeeded"


class CancellationRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CancellationRequest

    prescription = factory.SubFactory(PrescriptionFactory)
    clinic = factory.SelfAttribute("prescription.clinic")
    status_when_requested = "dispensed"
    reason = "The patient no longer needs it."
    requested_by = "client:test"


class NhsChargeRateFactory(factory.django.DjangoModelFactory):
    """Dated long before the seeded real rates, so it never changes what a test is charged."""

    class Meta:
        model = NhsChargeRate

    effective_from = factory.Sequence(lambda n: datetime.date(1950, 4, 1) + datetime.timedelta(days=n))
    amount_minor = 990
    source = "Synthetic rate"


class NhsChargeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = NhsCharge

    prescription = factory.SubFactory(PrescriptionFactory)
    clinic = factory.SelfAttribute("prescription.clinic")
    items = 1
    charge_per_item_minor = 990
    total_minor = 990


class ClaimBatchFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ClaimBatch

    month = factory.Sequence(lambda n: datetime.date(1950 + n // 12, n % 12 + 1, 1))


class ClaimItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ClaimItem

    batch = factory.SubFactory(ClaimBatchFactory)
    prescription_item = factory.SubFactory(PrescriptionItemFactory)
    prescription = factory.SelfAttribute("prescription_item.prescription")
    clinic = factory.SelfAttribute("prescription.clinic")
    dispensed_at = factory.LazyFunction(lambda: datetime.datetime(2026, 11, 25, 10, 0, tzinfo=datetime.UTC))
    charge_collected_minor = 990
