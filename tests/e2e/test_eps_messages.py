"""A demo-like run on real parts (API, Celery worker, Stripe and gateway simulators): every GB
message dispatched is an NHS EPS prescription-order that passes the gateway simulator's EPS
rules, read back from its /_messages."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from pharmacy import services as pharmacy_services
from pharmacy.models import Dispatch
from prescriptions import services
from prescriptions.models import Medication, Prescription, RepeatSeries, Status
from prescriptions.repeats import repeat_series_issue_due
from saga import holds
from sandbox import eps_rules
from tests.conftest import prescription_body
from tests.e2e.test_journey import json_ready, post_prescription, running_pipeline, token_for
from tests.patients.factories import ClinicFactory, PatientFactory
from tests.prescriptions.factories import PrescriberFactory, adhd_context
from tests.processes import wait_until
from tests.support.factories import pharmacist_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

__all__ = ["running_pipeline"]  # the fixture, shared with the journey tests

SENT = {Status.ACKNOWLEDGED, Status.DISPENSED, Status.SHIPPED, Status.DELIVERED}
CONTROLLED_DRUG = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-ControlledDrug"
REPEAT_INFORMATION = (
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation"
)


def sent(ids: list[int]) -> bool:
    return Prescription.objects.filter(pk__in=ids, status__in=SENT).count() == len(ids)


def request_of(message: dict) -> dict:  # type: ignore[type-arg]
    return next(
        e["resource"] for e in message["entry"] if e["resource"]["resourceType"] == "MedicationRequest"
    )


def extension(element: dict, url: str) -> dict | None:  # type: ignore[type-arg]
    return next((e for e in element.get("extension", []) if e["url"] == url), None)


def test_every_gb_message_dispatched_passes_the_eps_rules_and_carries_what_it_must(
    running_pipeline, nhs_charge_rates
):  # type: ignore[no-untyped-def]
    live_server, simulator, _stripe = running_pipeline
    clinic = ClinicFactory()
    prescriber = PrescriberFactory(clinic=clinic)
    token = token_for(live_server.url, clinic)
    paracetamol = Medication.objects.get(code="322236009")
    amoxicillin = Medication.objects.get(code="323509004")
    amlodipine = Medication.objects.get(code="318135008")
    methylphenidate = Medication.objects.get(code="324907005")
    patients = [PatientFactory(clinic=clinic, phone="07700 900123") for _ in range(4)]
    today = timezone.localdate()

    two_items = prescription_body(patients[0].pk, prescriber.pk, paracetamol)
    two_items["items"].append(
        {
            "medication": {"system": amoxicillin.code_system, "code": amoxicillin.code},
            "dose_text": "One capsule three times a day",
            "quantity": "21",
            "unit": "capsule",
            "days_supply": 7,
        }
    )
    acute_private = post_prescription(live_server.url, token, "eps-private", two_items)
    nhs = post_prescription(
        live_server.url,
        token,
        "eps-nhs",
        prescription_body(
            patients[1].pk,
            prescriber.pk,
            amlodipine,
            item={"dose_text": "Take one tablet once a day", "days_supply": 28},
            funding="nhs",
        ),
    )
    controlled = post_prescription(
        live_server.url,
        token,
        "eps-cd",
        prescription_body(
            patients[2].pk,
            prescriber.pk,
            methylphenidate,
            item={
                "quantity": "56",
                "quantity_words": "fifty six",
                "days_supply": 28,
                "dose_text": "One tablet twice a day",
            },
            **json_ready(adhd_context()),
        ),
    )
    repeat_original = post_prescription(
        live_server.url,
        token,
        "eps-repeat",
        prescription_body(
            patients[3].pk,
            prescriber.pk,
            paracetamol,
            item={"days_supply": 28, "quantity": "56", "dose_text": "Take one tablet twice a day"},
            repeats=1,
            earliest_fill_date=str(today + datetime.timedelta(days=3)),
        ),
    )
    wait_until(
        lambda: Prescription.objects.get(pk=controlled).status == Status.AWAITING_PHARMACIST,
        seconds=60,
        what="the controlled drug in the pharmacist queue",
    )
    services.prescription_review(
        prescription_id=controlled,
        pharmacist=pharmacist_create(username="eps-pharmacist"),
        decision="approved",
        reason="Stable dose, monitoring up to date.",
    )
    # The repeat may not be supplied before its earliest fill date: a pharmacist sees why
    # (dates.supply_held), and once approved it is held until that day, then sent.
    wait_until(
        lambda: Prescription.objects.get(pk=repeat_original).status == Status.AWAITING_PHARMACIST,
        seconds=60,
        what="the repeat with a later earliest fill date in the pharmacist queue",
    )
    services.prescription_review(
        prescription_id=repeat_original,
        pharmacist=pharmacist_create(username="eps-pharmacist-2"),
        decision="approved",
        reason="Start date intended; valid on that day.",
    )
    wait_until(lambda: sent([acute_private, nhs, controlled]), seconds=120, what="three prescriptions sent")
    wait_until(
        lambda: Prescription.objects.get(pk=repeat_original).status == Status.PAID,
        seconds=60,
        what="the repeat paid and held",
    )
    assert not sent([repeat_original])
    assert holds.held_prescriptions_release(today=today + datetime.timedelta(days=2)) == []
    assert holds.held_prescriptions_release(today=today + datetime.timedelta(days=3)) == [repeat_original]
    first_round = [acute_private, nhs, controlled, repeat_original]
    wait_until(lambda: sent(first_round), seconds=120, what="four prescriptions sent")
    wait_until(
        lambda: RepeatSeries.objects.filter(origin_id=repeat_original).exists(),
        seconds=30,
        what="the repeat series",
    )
    [repeat_issue] = repeat_series_issue_due(today=today + datetime.timedelta(days=28))

    # Issued for day 28 (the test moves the calendar; the saga runs today), so dispatching it waits
    # for that day: create its dispatch as the saga would on day 28.
    def repeat_issue_dispatched_on_day_28() -> bool:
        if Prescription.objects.get(pk=repeat_issue).status in (Status.PAID, Status.NHS_FUNDED):
            pharmacy_services.dispatch_create(
                prescription_id=repeat_issue, today=today + datetime.timedelta(days=28)
            )
        return Dispatch.objects.filter(prescription_id=repeat_issue).exists()

    wait_until(repeat_issue_dispatched_on_day_28, seconds=90, what="the repeat issue dispatched")
    wait_until(lambda: sent([repeat_issue]), seconds=90, what="the repeat issue sent")

    messages = simulator.messages()

    assert simulator.stats()["refused_by_eps_rules"] == 0
    assert [eps_rules.check_message(message) for message in messages] == [[]] * len(messages)
    by_key = {message["identifier"]["value"]: message for message in messages}
    dispatches = {
        d.prescription_id: str(d.idempotency_key)
        for d in Dispatch.objects.filter(prescription_id__in=[*first_round, repeat_issue])
    }
    assert set(by_key) == set(dispatches.values())
    message = {prescription_id: by_key[key] for prescription_id, key in dispatches.items()}
    assert (
        len(
            [
                e
                for e in message[acute_private]["entry"]
                if e["resource"]["resourceType"] == "MedicationRequest"
            ]
        )
        == 2
    )
    cd = request_of(message[controlled])
    assert extension(cd, CONTROLLED_DRUG) == {
        "url": CONTROLLED_DRUG,
        "extension": [
            {"url": "quantityWords", "valueString": "fifty six"},
            {
                "url": "schedule",
                "valueCoding": {
                    "system": "https://fhir.nhs.uk/CodeSystem/medicationrequest-controlled-drug",
                    "code": "CD2",
                    "display": "Schedule 2",
                },
            },
        ],
    }
    original, issued = request_of(message[repeat_original]), request_of(message[repeat_issue])
    assert (original["intent"], issued["intent"]) == ("original-order", "instance-order")
    assert [
        part["valueUnsignedInt"] for part in extension(original, REPEAT_INFORMATION)["extension"][:1]
    ] == [1]
    assert [part["valueUnsignedInt"] for part in extension(issued, REPEAT_INFORMATION)["extension"][:1]] == [
        2
    ]
    assert original["dispenseRequest"]["validityPeriod"] == {"start": str(today + datetime.timedelta(days=3))}
    assert request_of(message[nhs])["courseOfTherapyType"]["coding"][0]["code"] == "acute"
    prescription_ids = {request_of(m)["groupIdentifier"]["value"] for m in messages}
    assert len(prescription_ids) == 5  # every prescription its own short-form ID
