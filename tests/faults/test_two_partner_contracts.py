"""Faults across both partner contracts: US prescriptions routed between the FHIR gateway
(status by signed webhooks) and the mail-order pharmacy (status by polling), with a real worker
and beat, while the mail-order pharmacy answers a share of its requests 503 and is killed and
restarted mid-journey.

It asserts every prescription delivered, one order each at exactly the partner routing chose,
one charge each, nothing dead-lettered and no operator alert."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from billing.models import Payment
from pharmacy import routing
from pharmacy.models import DeadLetter, Dispatch, OrderAlert, Partner
from prescriptions.formulary import formulary_load
from prescriptions.models import Prescription, Status
from tests.conftest import FORMULARY_FILE
from tests.e2e.test_routing_mailorder import submit
from tests.faults.pipeline import assert_one_order_per_prescription
from tests.patients.factories import ClinicFactory
from tests.processes import (
    MAILORDER_API_KEY,
    MailOrderSimulator,
    Simulator,
    StripeSimulator,
    purge_queues,
    start_mailorder_simulator,
    start_simulator,
    start_stripe_simulator,
    wait_until,
)

pytestmark = pytest.mark.faults

PARTNER_SECRETS = {"mailorder": {"api_key": MAILORDER_API_KEY}}


@pytest.fixture
def gateway(live_server, transactional_db, settings) -> Iterator[Simulator]:  # type: ignore[no-untyped-def]
    """The FHIR gateway simulator walking orders on by webhooks to this test's server."""
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    settings.PARTNER_SECRETS = PARTNER_SECRETS
    formulary_load(path=FORMULARY_FILE)
    purge_queues()
    simulator = start_simulator(webhook_url=f"{live_server.url}/webhooks/gateway/", step_delay=0.3)
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def mailorder() -> Iterator[MailOrderSimulator]:
    """The mail-order pharmacy answering 30% of its requests 503 (seeded), walking orders slowly
    enough that a restart lands mid-journey."""
    simulator = start_mailorder_simulator(step_delay=1.0, error_rate=0.3, seed=7)
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def stripe(live_server) -> Iterator[StripeSimulator]:  # type: ignore[no-untyped-def]
    simulator = start_stripe_simulator(
        webhook_url=f"{live_server.url}/webhooks/stripe/", auto_confirm=True, auto_confirm_delay=0.2
    )
    try:
        yield simulator
    finally:
        simulator.stop()


def delivered_count(ids: list[int]) -> int:
    return Prescription.objects.filter(pk__in=ids, status=Status.DELIVERED).count()


def test_a_flaky_mail_order_pharmacy_restarted_mid_journey_and_the_fhir_gateway_deliver_each_once(
    gateway, mailorder, stripe, workers, beat
):  # type: ignore[no-untyped-def]
    # Given the default FHIR partner (everywhere, a fee per item) and the mail-order pharmacy
    # (NY only, no fee), retries and polling fast
    Partner.objects.filter(pk=routing.default_partner_ensure().pk).update(fee_per_item_minor=300)
    Partner.objects.create(
        code="mailorder",
        name="Mail-Order Pharmacy",
        adapter=Partner.Adapter.MAILORDER,
        status_by=Partner.StatusBy.POLLING,
        base_url=mailorder.url,
        countries=["US"],
        us_states=["NY"],
        capacity=100,
    )
    env = {
        "STRIPE_API_BASE": stripe.url,
        "PARTNER_SECRETS": json.dumps(PARTNER_SECRETS),
        "PARTNER_POLL_AFTER_SECONDS": "1",
        "PARTNER_POLL_BEAT_SECONDS": "1",
        "GATEWAY_TIMEOUT_SECONDS": "2",
        "GATEWAY_RETRY_BACKOFF_SECONDS": "0.5",
        "GATEWAY_RETRY_BACKOFF_MAX_SECONDS": "2",
        "GATEWAY_CIRCUIT_OPEN_SECONDS": "2",
        "GATEWAY_CIRCUIT_OPEN_MAX_SECONDS": "4",
    }
    workers(**env)
    beat(**env)
    clinic = ClinicFactory(jurisdiction="US")

    # When four New York prescriptions go to the mail-order pharmacy and two Californian ones to
    # the FHIR gateway, and the mail-order pharmacy is killed and restarted on its state file
    # once it holds orders
    by_mail = [submit(clinic, "NY") for _ in range(4)]
    by_fhir = [submit(clinic, "CA") for _ in range(2)]
    wait_until(lambda: mailorder.stats()["orders"] >= 2, seconds=60, what="orders at the mail-order pharmacy")
    mailorder.kill()
    assert delivered_count(by_mail) < len(by_mail)  # the kill lands mid-journey
    time.sleep(3)
    mailorder.restart()
    wait_until(
        lambda: delivered_count(by_mail + by_fhir) == len(by_mail + by_fhir),
        seconds=120,
        what="every prescription delivered",
    )

    # Then each is delivered with one order at the partner routing chose, charged once, and
    # nothing is dead-lettered or raised to the operators
    stats = mailorder.stats()
    assert stats["errors"] > 0  # the 503s really were served
    assert_one_order_per_prescription(mailorder, by_mail)
    assert_one_order_per_prescription(gateway, by_fhir)
    chosen = dict(
        Dispatch.objects.filter(prescription_id__in=by_mail + by_fhir).values_list(
            "prescription_id", "partner__code"
        )
    )
    assert chosen == {**dict.fromkeys(by_mail, "mailorder"), **dict.fromkeys(by_fhir, "gateway")}
    for prescription_id in by_mail + by_fhir:
        assert list(
            Payment.objects.filter(prescription_id=prescription_id).values_list("status", flat=True)
        ) == ["succeeded"]
    assert not DeadLetter.objects.exists()
    assert not OrderAlert.objects.exists()
