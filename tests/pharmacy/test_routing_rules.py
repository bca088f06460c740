"""Routing's rules as tables: who is eligible for an order, and how the eligible are ranked."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from pharmacy.routing import US_STATES, Item, Order, PartnerFacts, cost_minor, ineligibility, route

# Every state and DC, as the default partner is licensed.
ALL_STATES = frozenset(US_STATES)
ITEM = Item(product_code="349594", quantity=Decimal(28), therapy_area="adhd")
US_ORDER = Order(country="US", state="NY", items=(ITEM,))
PARTNER = PartnerFacts(
    code="east",
    countries=frozenset({"US"}),
    us_states=frozenset({"NY", "NJ"}),
    controlled_schedules=frozenset({"US:II"}),
    capacity=10,
)


@pytest.mark.parametrize(
    ("order", "partner", "tried", "reason"),
    [
        (US_ORDER, PARTNER, [], None),
        (US_ORDER, replace(PARTNER, countries=frozenset({"GB"})), [], "does not dispense in US"),
        (replace(US_ORDER, state="CA"), PARTNER, [], "not licensed in CA"),
        (
            replace(US_ORDER, state=""),
            PARTNER,
            [],
            "the patient's state is unknown and the partner is not licensed in every state",
        ),
        (replace(US_ORDER, state=""), replace(PARTNER, us_states=ALL_STATES), [], None),
        (
            Order(country="GB", state="", items=(ITEM,)),
            replace(PARTNER, countries=frozenset({"GB"})),
            [],
            None,
        ),
        (
            replace(US_ORDER, items=(replace(ITEM, schedule="US:II"),)),
            PARTNER,
            [],
            None,
        ),
        (
            replace(US_ORDER, items=(ITEM, replace(ITEM, product_code="x", schedule="US:IV"))),
            PARTNER,
            [],
            "does not handle schedule US:IV",
        ),
        (
            replace(US_ORDER, items=(replace(ITEM, cold_chain=True),)),
            PARTNER,
            [],
            "no cold chain for 349594",
        ),
        (
            replace(US_ORDER, items=(replace(ITEM, cold_chain=True),)),
            replace(PARTNER, cold_chain=True),
            [],
            None,
        ),
        (US_ORDER, replace(PARTNER, therapy_areas=frozenset({"diabetes"})), [], "does not handle adhd items"),
        (US_ORDER, replace(PARTNER, therapy_areas=frozenset({"adhd"})), [], None),
        (US_ORDER, replace(PARTNER, stock={"349594": 27}), [], "out of stock: 349594 (has 27, needs 28)"),
        (US_ORDER, replace(PARTNER, stock={"349594": 28}), [], None),
        (US_ORDER, replace(PARTNER, stock={"other": 0}), [], None),  # this product's stock unknown
        (US_ORDER, replace(PARTNER, in_flight=10), [], "at capacity (10 of 10 orders in flight)"),
        (US_ORDER, replace(PARTNER, in_flight=9), [], None),
        (US_ORDER, PARTNER, ["east"], "already refused this prescription"),
        (US_ORDER, replace(PARTNER, is_active=False), [], "inactive"),
        (US_ORDER, replace(PARTNER, is_configured=False), [], "no URL or keys configured"),
    ],
)
def test_eligibility(order, partner, tried, reason):  # type: ignore[no-untyped-def]
    assert ineligibility(order, partner, tried=tried) == reason


@pytest.mark.parametrize(
    ("fee", "prices", "expected"),
    [
        (150, {}, 300),  # two items at the per-item fee
        (150, {"349594": 100}, 250),  # the price list wins for the products it names
        (0, {"349594": 100, "other": 5}, 105),
    ],
)
def test_cost_is_the_price_list_else_the_per_item_fee(fee, prices, expected):  # type: ignore[no-untyped-def]
    order = replace(US_ORDER, items=(ITEM, replace(ITEM, product_code="other")))
    assert cost_minor(order, replace(PARTNER, fee_per_item_minor=fee, price_list=prices)) == expected


def partners(*specs: dict) -> list[PartnerFacts]:  # type: ignore[type-arg]
    return [replace(PARTNER, **spec) for spec in specs]


@pytest.mark.parametrize(
    ("specs", "chosen", "passed_over"),
    [
        # Cheapest first.
        (
            [{"code": "a", "fee_per_item_minor": 300}, {"code": "b", "fee_per_item_minor": 200}],
            "b",
            {"a": "eligible, but costs 300 against 200"},
        ),
        # Equal cost: least loaded.
        (
            [{"code": "a", "in_flight": 5}, {"code": "b", "in_flight": 2}],
            "b",
            {"a": "eligible, but busier (50% of capacity against 20%)"},
        ),
        # Stock known to cover the order beats a cheaper partner whose stock is unknown.
        (
            [
                {"code": "a", "fee_per_item_minor": 100},
                {"code": "b", "fee_per_item_minor": 900, "stock": {"349594": 50}},
            ],
            "b",
            {"a": "eligible, but its stock is unknown"},
        ),
        # Known short: not eligible at all, whatever the price.
        (
            [
                {"code": "a", "fee_per_item_minor": 100, "stock": {"349594": 0}},
                {"code": "b", "fee_per_item_minor": 900},
            ],
            "b",
            {"a": "out of stock: 349594 (has 0, needs 28)"},
        ),
        # All equal: by code, so the choice never depends on the order partners are read in.
        ([{"code": "b"}, {"code": "a"}], "a", {"b": "eligible, equal on cost and load; chosen by code"}),
        # Licensed-state routing: only the partner licensed in the patient's state.
        (
            [{"code": "a", "us_states": frozenset({"CA"})}, {"code": "b", "fee_per_item_minor": 999}],
            "b",
            {"a": "not licensed in NY"},
        ),
    ],
)
def test_ranking(specs, chosen, passed_over):  # type: ignore[no-untyped-def]
    decision = route(US_ORDER, partners(*specs))
    assert decision.chosen == chosen
    assert decision.passed_over == passed_over


def test_no_eligible_partner_says_why_for_each():
    decision = route(
        US_ORDER, partners({"code": "a", "us_states": frozenset({"CA"})}, {"code": "b"}), tried=["b"]
    )

    assert decision.chosen is None
    assert decision.ranked == ()
    assert (
        decision.reason == "No eligible partner: a: not licensed in NY; b: already refused this prescription"
    )


def test_no_partner_at_all_is_its_own_reason():
    assert route(US_ORDER, []).reason == "No pharmacy partner is set up."
