"""Routing across both partner contracts on real parts: the FHIR gateway simulator (status by
signed webhooks) and the mail-order pharmacy simulator (status by polling, beat's
partner-orders-poll), a real worker and beat, the Stripe simulator and the app serving webhooks.

A US prescription for a patient in the mail-order pharmacy's only licensed state goes there and
reaches `delivered` by polling alone; when the mail-order pharmacy is out of the product, the
next one fails over once to the FHIR gateway, is paid once, the clinic is told, and it is
delivered there."""

from __future__ import annotations

import json

import pytest

from events.models import ClinicWebhookEndpoint, Event
from pharmacy import routing
from pharmacy.models import Dispatch, Partner
from prescriptions.formulary import formulary_load
from prescriptions.models import Prescriber
from tests.conftest import FORMULARY_FILE
from tests.e2e.test_routing import ATOMOXETINE, assert_failed_over_once, delivered, partner_of
from tests.events.receiver import receiver_start
from tests.patients.factories import ClinicFactory
from tests.prescriptions.factories import VALID_DEA, VALID_NPI, PrescriberFactory, adhd_context, scenario
from tests.processes import (
    MAILORDER_API_KEY,
    purge_queues,
    start_beat,
    start_mailorder_simulator,
    start_simulator,
    start_stripe_simulator,
    start_worker,
    stop_process,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def both_contracts(live_server, settings):  # type: ignore[no-untyped-def]
    """The default partner on the FHIR gateway simulator (licensed everywhere, a fee per item)
    and a mail-order partner on its simulator (licensed in NY only, no fee), polled every second."""
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    partner_secrets = {"mailorder": {"api_key": MAILORDER_API_KEY}}
    settings.PARTNER_SECRETS = partner_secrets
    formulary_load(path=FORMULARY_FILE)
    purge_queues()
    gateway = start_simulator(webhook_url=f"{live_server.url}/webhooks/gateway/", step_delay=0.2)
    mailorder = start_mailorder_simulator(step_delay=0.2)
    stripe = start_stripe_simulator(
        webhook_url=f"{live_server.url}/webhooks/stripe/", auto_confirm=True, auto_confirm_delay=0.2
    )
    env = {
        "STRIPE_API_BASE": stripe.url,
        "PARTNER_SECRETS": json.dumps(partner_secrets),
        "PARTNER_POLL_AFTER_SECONDS": "1",
        "PARTNER_POLL_BEAT_SECONDS": "1",
    }
    worker = start_worker(gateway_url=gateway.url, extra_env=env)
    beat = start_beat(gateway_url=gateway.url, extra_env=env)
    receiver = receiver_start()
    Partner.objects.filter(pk=routing.default_partner_ensure().pk).update(fee_per_item_minor=300)
    Partner.objects.create(
        code="mailorder",
        name="Mail-Order Pharmacy",
        adapter=Partner.Adapter.MAILORDER,
        status_by=Partner.StatusBy.POLLING,
        base_url=mailorder.url,
        countries=["US"],
        us_states=["NY"],
        fee_per_item_minor=0,
        capacity=100,
    )
    try:
        yield gateway, mailorder, receiver
    finally:
        stop_process(beat)
        stop_process(worker)
        for process in (gateway, mailorder, stripe, receiver):
            process.stop()


def submit(clinic, state: str) -> int:  # type: ignore[no-untyped-def]
    """A private US prescription for a patient at a US address in `state` (the mail-order
    pharmacy ships to a street address with a ZIP code)."""
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
        patient={
            "region": state,
            "city": "Albany",
            "address_line": "20 State Street",
            "postal_code": "12207",
        },
        prescriber_object=prescriber,
        item={"unit": "capsule", "dose_text": "One capsule each morning", "quantity": 28, "days_supply": 28},
        **adhd_context(),
    )
    return prescription.pk


def test_a_us_prescription_goes_to_the_mail_order_pharmacy_and_fails_over_to_the_fhir_gateway(
    both_contracts,
):  # type: ignore[no-untyped-def]
    gateway, mailorder, receiver = both_contracts
    clinic = ClinicFactory(jurisdiction="US")
    ClinicWebhookEndpoint.objects.create(clinic=clinic, url=receiver.url, secret="whsec_mailorder")

    # A patient in New York: the mail-order pharmacy is licensed there and cheaper. It sends no
    # webhooks: beat's partner-orders-poll walks the order to delivered.
    by_mail = submit(clinic, "NY")
    delivered(by_mail)
    assert partner_of(by_mail) == "mailorder"
    assert Dispatch.objects.get(prescription_id=by_mail).gateway_order_id.startswith("MO-")
    assert (mailorder.stats()["orders"], gateway.stats()["orders"]) == (1, 0)
    assert mailorder.stats()["statuses"] == {"DELIVERED": 1}
    routed = Event.objects.get(aggregate_id=by_mail, type="prescription.routed")
    assert routed.payload["passed_over"] == {"gateway": "eligible, but costs 300 against 0"}

    # The mail-order pharmacy is out of the product and refuses: the FHIR gateway fills it.
    mailorder.control(out_of_stock=[ATOMOXETINE])
    refused_once = submit(clinic, "NY")
    delivered(refused_once)
    assert partner_of(refused_once) == "gateway"
    assert mailorder.stats()["refusals"] == {"OUT_OF_STOCK": 1}
    assert (mailorder.stats()["orders"], gateway.stats()["orders"]) == (1, 1)
    assert [
        entry["partner"] for entry in Dispatch.objects.get(prescription_id=refused_once).partners_tried
    ] == ["mailorder"]
    assert_failed_over_once(refused_once, receiver)
