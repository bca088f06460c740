"""Billing test helpers: prescriptions made through the services, the Stripe simulator, and
signed webhook delivery to our endpoint."""

from __future__ import annotations

import datetime
import json
import time

from django.test import Client

from common.signing import signature_header
from prescriptions import services
from prescriptions.formulary import formulary_load
from prescriptions.models import FormularyRelease, Medication, Prescription, Status
from tests.conftest import FORMULARY_FILE
from tests.patients.factories import PatientFactory, distinct_nhs_number

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
