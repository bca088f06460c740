"""Routing on real parts: two gateway simulator processes as two partners, a worker, the Stripe
simulator and the app serving webhooks. A US prescription goes to the partner licensed in the
patient's state; an out-of-stock refusal moves one to the next partner once, paid once, with the
clinic told; a partner's signed stock feed flips the choice for the next one."""

from __future__ import annotations

import pytest
import requests

from billing.models import Payment
from events.models import ClinicWebhookEndpoint, Event
from pharmacy import routing
from pharmacy.models import Dispatch, Partner
from prescriptions.formulary import formulary_load
from prescriptions.models import Prescriber, Prescription, Status
from tests.conftest import FORMULARY_FILE
from tests.events.receiver import receiver_start
from tests.patients.factories import ClinicFactory
from tests.prescriptions.factories import VALID_DEA, VALID_NPI, PrescriberFactory, adhd_context, scenario
from tests.processes import (
    purge_queues,
    start_simulator,
    start_stripe_simulator,
    start_worker,
    stop_process,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ATOMOXETINE = "349594"  # US, not controlled


@pytest.fixture
def two_partners(live_server, settings):  # type: ignore[no-untyped-def]
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    formulary_load(path=FORMULARY_FILE)
    purge_queues()
    webhooks = f"{live_server.url}/webhooks/gateway/"
    east = start_simulator(webhook_url=webhooks, step_delay=0.2)
    west = start_simulator(webhook_url=webhooks, step_delay=0.2)
    stripe = start_stripe_simulator(
        webhook_url=f"{live_server.url}/webhooks/stripe/", auto_confirm=True, auto_confirm_delay=0.2
    )
    worker = start_worker(gateway_url=east.url, extra_env={"STRIPE_API_BASE": stripe.url})
    receiver = receiver_start()
    Partner.objects.filter(pk=routing.default_partner_ensure().pk).update(is_active=False)
    common = {"countries": ["US"], "capacity": 100}
    Partner.objects.create(
        code="east",
        name="East Pharmacy",
        base_url=east.url,
        us_states=["NY", "NJ"],
        fee_per_item_minor=100,
        **common,
    )
    Partner.objects.create(
        code="west",
        name="West Pharmacy",
        base_url=west.url,
        us_states=["CA", "NY"],
        fee_per_item_minor=200,
        **common,
    )
    try:
        yield live_server, east, west, receiver
    finally:
        stop_process(worker)
        for process in (east, west, stripe, receiver):
            process.stop()


def submit(clinic, state: str) -> int:  # type: ignore[no-untyped-def]
    """A private US prescription for a patient in `state`, as the clinic API would store it."""
    prescriber = Prescriber.objects.filter(clinic=clinic).first() or PrescriberFactory(
        clinic=clinic,
        registration_body="NPI",
        registration_number=VALID_NPI,
        licensed_states=["CA", "NY"],
        dea_number=VALID_DEA,
        address="10 Main St, Albany NY",
    )
    prescription = scenario(
        clinic=clinic,
        code=ATOMOXETINE,
        patient={"region": state},
        prescriber_object=prescriber,
        item={"unit": "capsule", "dose_text": "One capsule each morning", "quantity": 28, "days_supply": 28},
        **adhd_context(),
    )
    return prescription.pk


def delivered(prescription_id: int) -> None:
    wait_until(
        lambda: Prescription.objects.get(pk=prescription_id).status == Status.DELIVERED,
        seconds=60,
        what=f"prescription {prescription_id} delivered",
    )


def partner_of(prescription_id: int) -> str:
    return Dispatch.objects.select_related("partner").get(prescription_id=prescription_id).partner.code


ROUTING_STEPS = (
    "prescription.paid",
    "prescription.routed",
    "prescription.partner_refused",
    "prescription.awaiting_partner",
    "prescription.acknowledged",
    "prescription.delivered",
)


def event_types(prescription_id: int) -> list[str]:
    return list(
        Event.objects.filter(aggregate_id=prescription_id, type__in=ROUTING_STEPS)
        .order_by("sequence")
        .values_list("type", flat=True)
    )


def assert_failed_over_once(prescription_id: int, receiver) -> None:  # type: ignore[no-untyped-def]
    """Refused by the first partner and filled by the next: routed twice, charged once, and the
    clinic told of the refusal."""
    assert event_types(prescription_id) == [
        "prescription.paid",
        "prescription.routed",
        "prescription.partner_refused",
        "prescription.routed",
        "prescription.acknowledged",
        "prescription.delivered",
    ]
    payments = Payment.objects.filter(prescription_id=prescription_id)
    assert list(payments.values_list("status", flat=True)) == ["succeeded"]
    wait_until(
        lambda: any(
            payload["type"] == "prescription.partner_refused"
            and payload["prescription"]["id"] == prescription_id
            for payload in receiver.accepted()
        ),
        seconds=30,
        what="the clinic told of the refusal",
    )


def test_prescriptions_are_routed_across_two_partners_by_licence_stock_and_price(two_partners):  # type: ignore[no-untyped-def]
    live_server, east, west, receiver = two_partners
    clinic = ClinicFactory(jurisdiction="US")
    ClinicWebhookEndpoint.objects.create(clinic=clinic, url=receiver.url, secret="whsec_routing")

    # A patient in California: only West is licensed there, though East is cheaper.
    in_california = submit(clinic, "CA")
    delivered(in_california)
    assert partner_of(in_california) == "west"
    assert (east.stats()["orders"], west.stats()["orders"]) == (0, 1)
    routed = Event.objects.get(aggregate_id=in_california, type="prescription.routed")
    assert routed.payload["passed_over"] == {"east": "not licensed in CA", "gateway": "inactive"}

    # East (cheaper, licensed in NY) is out of stock and refuses: West fills it, East is tried once.
    east.control(out_of_stock=[ATOMOXETINE])
    refused_once = submit(clinic, "NY")
    delivered(refused_once)
    assert partner_of(refused_once) == "west"
    assert east.stats()["refused_out_of_stock"] == 1
    assert (east.stats()["orders"], west.stats()["orders"]) == (0, 2)
    assert_failed_over_once(refused_once, receiver)

    # East has it again (its stock unknown): the cheaper partner wins.
    east.control(out_of_stock=[])
    cheaper = submit(clinic, "NY")
    delivered(cheaper)
    assert partner_of(cheaper) == "east"

    # East's warehouse reports none left, by its signed stock webhook: the next one goes West.
    east.control(stock={ATOMOXETINE: 0})
    published = requests.post(
        f"{east.url}/_publish_stock",
        json={"url": f"{live_server.url}/webhooks/partners/east/stock/"},
        timeout=10,
    )
    assert published.status_code == 200, published.text
    flipped = submit(clinic, "NY")
    delivered(flipped)
    assert partner_of(flipped) == "west"
    assert Dispatch.objects.get(prescription_id=flipped).routing["passed_over"]["east"] == (
        "out of stock: 349594 (has 0, needs 28)"
    )
    assert (east.stats()["orders"], west.stats()["orders"]) == (1, 3)
