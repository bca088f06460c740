"""Routing across two partners over real HTTP: two gateway simulator processes, one partner each."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from events.models import Event
from pharmacy import routing, services, stock
from pharmacy.models import Dispatch, Partner, PartnerStock
from prescriptions.models import Prescription, Status
from saga.reconciler import stuck_prescriptions
from tests.outbox import owed_tasks
from tests.pharmacy.factories import force_status
from tests.prescriptions.factories import scenario
from tests.processes import start_simulator

pytestmark = pytest.mark.django_db

ATOMOXETINE = "349594"  # US, not controlled


@pytest.fixture(scope="module")
def simulators():  # type: ignore[no-untyped-def]
    east, west = start_simulator(no_auto_advance=True), start_simulator(no_auto_advance=True)
    yield east, west
    east.stop()
    west.stop()


@pytest.fixture
def partners(simulators, formulary):  # type: ignore[no-untyped-def]
    """East (NY, NJ; cheaper) and West (CA, NY); the default gateway partner switched off."""
    east_sim, west_sim = simulators
    for simulator in simulators:
        simulator.reset()
    Partner.objects.filter(pk=routing.default_partner_ensure().pk).update(is_active=False)
    common = {"countries": ["US"], "controlled_schedules": ["US:II"], "capacity": 10}
    east = Partner.objects.create(
        code="east",
        name="East Pharmacy",
        base_url=east_sim.url,
        stock_csv_url=f"{east_sim.url}/stock.csv",
        us_states=["NY", "NJ"],
        fee_per_item_minor=100,
        **common,
    )
    west = Partner.objects.create(
        code="west",
        name="West Pharmacy",
        base_url=west_sim.url,
        stock_csv_url=f"{west_sim.url}/stock.csv",
        us_states=["CA", "NY"],
        fee_per_item_minor=200,
        **common,
    )
    return east, west


def paid_us_prescription(state: str) -> Prescription:
    prescription = scenario(
        jurisdiction="US",
        code=ATOMOXETINE,
        patient={
            "region": state,
            "city": "Albany",
            "address_line": "20 State Street",
            "postal_code": "12207",
        },
        prescriber={"licensed_states": [state]},
    )
    force_status(prescription, Status.PAID)
    return prescription


def dispatched(prescription: Prescription) -> Dispatch:
    dispatch = services.dispatch_create(prescription_id=prescription.pk)
    assert dispatch is not None
    return dispatch


def events(prescription: Prescription) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    return [
        (event.type, event.payload)
        for event in Event.objects.filter(aggregate_id=prescription.pk, type__startswith="prescription.")
        .exclude(type="prescription.received")
        .order_by("sequence")
    ]


def test_a_us_prescription_goes_to_the_partner_licensed_in_the_patients_state(partners, simulators):  # type: ignore[no-untyped-def]
    east_sim, west_sim = simulators
    prescription = paid_us_prescription("CA")
    dispatch = dispatched(prescription)

    assert services.dispatch_send(dispatch_id=dispatch.pk) == "acknowledged"

    dispatch.refresh_from_db()
    assert dispatch.partner.code == "west"
    assert (east_sim.stats()["orders"], west_sim.stats()["orders"]) == (0, 1)
    assert events(prescription)[0] == (
        "prescription.routed",
        {
            "partner": "west",
            "summary": "Sent to West Pharmacy.",
            "passed_over": {"east": "not licensed in CA", "gateway": "inactive"},
        },
    )


def test_the_cheaper_partner_wins_when_both_are_licensed(partners, simulators):  # type: ignore[no-untyped-def]
    prescription = paid_us_prescription("NY")
    dispatch = dispatched(prescription)

    assert services.dispatch_send(dispatch_id=dispatch.pk) == "acknowledged"

    dispatch.refresh_from_db()
    assert dispatch.partner.code == "east"
    assert dispatch.routing["passed_over"] == {
        "gateway": "inactive",
        "west": "eligible, but costs 200 against 100",
    }


def test_an_out_of_stock_refusal_moves_the_order_to_the_next_partner_exactly_once(partners, simulators):  # type: ignore[no-untyped-def]
    east_sim, west_sim = simulators
    east_sim.control(out_of_stock=[ATOMOXETINE])
    prescription = paid_us_prescription("NY")
    dispatch = dispatched(prescription)

    assert services.dispatch_send(dispatch_id=dispatch.pk) == "failed-over"
    # The next send is owed through the outbox, as the first was.
    assert owed_tasks() == [(services.DISPATCH_SEND_TASK, [dispatch.pk])]
    assert services.dispatch_send(dispatch_id=dispatch.pk) == "acknowledged"
    assert services.dispatch_send(dispatch_id=dispatch.pk) == "not-pending"

    dispatch.refresh_from_db()
    assert dispatch.partner.code == "west"
    assert dispatch.partners_tried == [{"partner": "east", "reason": "out_of_stock"}]
    assert east_sim.stats()["refused_out_of_stock"] == 1
    assert (east_sim.stats()["orders"], west_sim.stats()["orders"]) == (0, 1)
    assert [event_type for event_type, _ in events(prescription)] == [
        "prescription.routed",
        "prescription.partner_refused",
        "prescription.routed",
        "prescription.acknowledged",
    ]
    refused = events(prescription)[1][1]
    assert (refused["partner"], refused["reason"]) == ("east", "out_of_stock")
    assert events(prescription)[2][1]["passed_over"]["east"] == "already refused this prescription"
    assert Prescription.objects.get(pk=prescription.pk).status == Status.ACKNOWLEDGED


def test_when_every_partner_refuses_the_dispatch_waits_in_the_staff_queue_saying_why(partners, simulators):  # type: ignore[no-untyped-def]
    for simulator in simulators:
        simulator.control(out_of_stock=[ATOMOXETINE])
    prescription = paid_us_prescription("NY")
    dispatch = dispatched(prescription)

    outcomes = [services.dispatch_send(dispatch_id=dispatch.pk) for _ in range(4)]

    assert outcomes == ["failed-over", "failed-over", "awaiting-partner", "not-pending"]
    dispatch.refresh_from_db()
    assert dispatch.status == Dispatch.Status.AWAITING_PARTNER
    assert dispatch.partner is None
    assert [entry["partner"] for entry in dispatch.partners_tried] == ["east", "west"]
    waiting = events(prescription)[-1]
    assert waiting[0] == "prescription.awaiting_partner"
    assert waiting[1]["reason"] == (
        "No eligible partner: east: already refused this prescription; gateway: inactive; "
        "west: already refused this prescription"
    )
    # Still paid (the charge stands, staff decide), and not counted as stuck work.
    assert Prescription.objects.get(pk=prescription.pk).status == Status.PAID
    Prescription.objects.filter(pk=prescription.pk).update(updated_at=timezone.now() - timedelta(hours=2))
    assert not stuck_prescriptions(older_than_seconds=60).filter(pk=prescription.pk).exists()


def test_a_stock_csv_pull_flips_the_choice(partners, simulators):  # type: ignore[no-untyped-def]
    east_sim, west_sim = simulators
    east_sim.control(stock={ATOMOXETINE: 0, "other": 5})
    west_sim.control(stock={ATOMOXETINE: 100})
    before = dispatched(paid_us_prescription("NY"))
    assert routing.decide(dispatch=services._load_for_sending(before.pk)).chosen == "east"

    report = stock.partner_stock_pull_all()

    assert report == {"pulled": 2, "failed": 0, "lines": 3}
    assert dict(
        PartnerStock.objects.filter(partner__code="east").values_list("product_code", "quantity")
    ) == {
        ATOMOXETINE: 0,
        "other": 5,
    }
    after = dispatched(paid_us_prescription("NY"))
    assert services.dispatch_send(dispatch_id=after.pk) == "acknowledged"
    after.refresh_from_db()
    assert after.partner.code == "west"
    assert after.routing["passed_over"]["east"] == "out of stock: 349594 (has 0, needs 28)"


def test_stock_older_than_the_configured_age_counts_as_unknown(partners, settings):  # type: ignore[no-untyped-def]
    east, _ = partners
    settings.PARTNER_STOCK_MAX_AGE_SECONDS = 3600
    PartnerStock.objects.create(
        partner=east,
        product_code=ATOMOXETINE,
        quantity=0,
        source="csv",
        updated_at=timezone.now() - timedelta(seconds=3601),
    )
    dispatch = dispatched(paid_us_prescription("NY"))

    decision = routing.decide(dispatch=services._load_for_sending(dispatch.pk))

    assert decision.chosen == "east"  # its zero is stale: unknown, and it is cheaper


def test_a_partner_that_is_down_keeps_its_pull_failure_to_itself(partners, simulators):  # type: ignore[no-untyped-def]
    east, _ = partners
    simulators[1].control(stock={ATOMOXETINE: 7})
    Partner.objects.filter(pk=east.pk).update(stock_csv_url="http://127.0.0.1:9/stock.csv")

    assert stock.partner_stock_pull_all() == {"pulled": 1, "failed": 1, "lines": 1}
    assert list(PartnerStock.objects.values_list("partner__code", "quantity")) == [("west", 7)]


def test_a_waiting_dispatch_is_routed_again_once_a_partner_can_take_it(partners, simulators):  # type: ignore[no-untyped-def]
    east, west = partners
    Partner.objects.filter(pk=west.pk).update(is_active=False)
    PartnerStock.objects.create(
        partner=east, product_code=ATOMOXETINE, quantity=0, source="csv", updated_at=timezone.now()
    )
    prescription = paid_us_prescription("NY")
    dispatch = dispatched(prescription)
    assert services.dispatch_send(dispatch_id=dispatch.pk) == "awaiting-partner"
    assert services.dispatches_route_waiting() == []  # nothing changed: it keeps waiting

    PartnerStock.objects.filter(partner=east).update(quantity=50, updated_at=timezone.now())
    routed = services.dispatches_route_waiting()

    assert routed == [dispatch.pk]
    dispatch.refresh_from_db()
    assert (dispatch.status, dispatch.partner_id) == (Dispatch.Status.PENDING, east.pk)
    assert (services.DISPATCH_SEND_TASK, [dispatch.pk]) in owed_tasks()
    assert services.dispatch_send(dispatch_id=dispatch.pk) == "acknowledged"
    assert [event_type for event_type, _ in events(prescription)] == [
        "prescription.awaiting_partner",
        "prescription.routed",
        "prescription.acknowledged",
    ]


def test_orders_at_a_polling_partner_are_asked_about(partners, simulators):  # type: ignore[no-untyped-def]
    east, west = partners
    Partner.objects.filter(pk=west.pk).update(status_by=Partner.StatusBy.POLLING)
    at_west = dispatched(paid_us_prescription("CA"))
    at_east = dispatched(paid_us_prescription("NJ"))
    for dispatch in (at_west, at_east):
        assert services.dispatch_send(dispatch_id=dispatch.pk) == "acknowledged"

    report = services.partner_orders_poll()
    again = services.partner_orders_poll()

    assert report == {"polled": 1, "advanced": 0, "alerted": 0, "unchanged": 1}
    assert again == {"polled": 0, "advanced": 0, "alerted": 0}  # asked a moment ago
    assert Dispatch.objects.get(pk=at_west.pk).status_checked_at is not None
    assert Dispatch.objects.get(pk=at_east.pk).status_checked_at is None


@pytest.fixture(scope="module")
def mailorder_simulator():  # type: ignore[no-untyped-def]
    from tests.processes import start_mailorder_simulator

    running = start_mailorder_simulator(step_delay=0.1)
    yield running
    running.stop()


@pytest.fixture
def mailorder(partners, mailorder_simulator, settings):  # type: ignore[no-untyped-def]
    """A third partner on the other contract: the mail-order pharmacy, cheapest, status by polling."""
    from tests.processes import MAILORDER_API_KEY

    mailorder_simulator.reset()
    settings.PARTNER_SECRETS = {"mo": {"api_key": MAILORDER_API_KEY}}
    Partner.objects.create(
        code="mo",
        name="Mail-Order",
        adapter=Partner.Adapter.MAILORDER,
        status_by=Partner.StatusBy.POLLING,
        base_url=mailorder_simulator.url,
        countries=["US"],
        us_states=["NY", "CA"],
        fee_per_item_minor=10,
    )
    return mailorder_simulator


def test_routing_and_failover_work_across_both_contracts(mailorder, simulators):  # type: ignore[no-untyped-def]
    east_sim, _ = simulators
    to_mailorder = dispatched(paid_us_prescription("NY"))
    outcome = services.dispatch_send(dispatch_id=to_mailorder.pk)
    assert outcome == "acknowledged", Dispatch.objects.get(pk=to_mailorder.pk).last_error
    to_mailorder.refresh_from_db()
    assert to_mailorder.partner.code == "mo"
    assert to_mailorder.gateway_order_id.startswith("MO-")

    # The mail-order pharmacy refuses (out of stock, in its own error codes): the FHIR partner fills it.
    mailorder.control(out_of_stock=[ATOMOXETINE])
    refused = dispatched(paid_us_prescription("NY"))
    assert services.dispatch_send(dispatch_id=refused.pk) == "failed-over"
    assert services.dispatch_send(dispatch_id=refused.pk) == "acknowledged"
    refused.refresh_from_db()
    assert refused.partner.code == "east"
    assert [entry["partner"] for entry in refused.partners_tried] == ["mo"]
    assert east_sim.stats()["orders"] == 1
