"""Choosing the partner that fills each prescription.

Eligible first: the partner is active and configured, dispenses in the patient's country (and,
in the US, is licensed in the patient's state), handles every item's controlled-drug schedule,
cold chain and therapy area, has room (orders in flight below its capacity), has not already
refused this prescription, and has no item known to be short. Stock older than
PARTNER_STOCK_MAX_AGE_SECONDS, or never reported, is unknown: such a partner stays eligible
(a feed that went quiet should not stop dispensing) but is ranked after every partner whose
stock is known to cover the order. Then cheapest (its price list, else its per-item fee), then
least loaded (orders in flight over capacity), then by code, so the choice is deterministic.

The pure functions below decide; `dispatch_route` reads the facts, applies the decision to the
dispatch and records it as a `prescription.routed` event (with the reason each other partner
was passed over), or holds the dispatch in the staff queue (`prescription.awaiting_partner`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from common import rows
from pharmacy.adapters.registry import DEFAULT_PARTNER_CODE, PartnerNotConfigured, partner_endpoint
from pharmacy.models import Dispatch, Partner, PartnerStock
from prescriptions import services as prescriptions
from prescriptions.models import Prescription, Status

logger = logging.getLogger(__name__)

# Where an order counts against a partner's capacity.
IN_FLIGHT_PRESCRIPTION_STATUSES = (Status.PAID, Status.NHS_FUNDED, Status.ACKNOWLEDGED, Status.DISPENSED)


@dataclass(frozen=True)
class Item:
    product_code: str
    quantity: Decimal
    schedule: str = ""  # "US:II", "GB:2"; blank when not controlled
    therapy_area: str = ""
    cold_chain: bool = False


@dataclass(frozen=True)
class Order:
    country: str
    state: str  # the patient's US state; blank when unknown or outside the US
    items: tuple[Item, ...]


@dataclass(frozen=True)
class PartnerFacts:
    """What routing knows about one partner at the moment of the decision."""

    code: str
    countries: frozenset[str]
    us_states: frozenset[str] = frozenset()
    controlled_schedules: frozenset[str] = frozenset()
    cold_chain: bool = False
    therapy_areas: frozenset[str] = frozenset()
    fee_per_item_minor: int = 0
    price_list: Mapping[str, int] = field(default_factory=dict)
    capacity: int = 1
    in_flight: int = 0
    # Fresh stock levels by product code; a product missing here is unknown.
    stock: Mapping[str, int] = field(default_factory=dict)
    is_active: bool = True
    is_configured: bool = True


@dataclass(frozen=True)
class Candidate:
    code: str
    cost_minor: int
    load: float
    stock_known: bool


@dataclass(frozen=True)
class Decision:
    chosen: str | None
    ranked: tuple[Candidate, ...]
    passed_over: dict[str, str]

    @property
    def reason(self) -> str:
        """Why no partner was chosen (blank when one was)."""
        if self.chosen:
            return ""
        if not self.passed_over:
            return "No pharmacy partner is set up."
        return "No eligible partner: " + "; ".join(f"{code}: {why}" for code, why in self.passed_over.items())

    def as_json(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "ranked": [
                {
                    "partner": candidate.code,
                    "cost_minor": candidate.cost_minor,
                    "load": round(candidate.load, 4),
                    "stock_known": candidate.stock_known,
                }
                for candidate in self.ranked
            ],
            "passed_over": self.passed_over,
        }


US_STATES = (
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
    "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC",
    "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY",
)  # fmt: skip
US_STATE_COUNT = len(US_STATES)  # the 50 states and DC
# The partner every prescription went to before routing (GATEWAY_* settings): licensed
# everywhere the service dispenses, for every schedule, until operators narrow it.
DEFAULT_PARTNER = {
    "name": "Pharmacy gateway (FHIR R4 messaging)",
    "adapter": "fhir_gateway",
    "status_by": "webhook",
    "countries": ["GB", "US"],
    "us_states": list(US_STATES),
    "controlled_schedules": [f"GB:{n}" for n in ("1", "2", "3", "4", "5")]
    + [f"US:{n}" for n in ("I", "II", "IIN", "III", "IIIN", "IV", "V")],
    "cold_chain": True,
    "capacity": 1_000_000,
}


def ineligibility(order: Order, partner: PartnerFacts, *, tried: Iterable[str] = ()) -> str | None:
    """Why `partner` may not fill `order`, or None when it may."""
    if partner.code in set(tried):
        return "already refused this prescription"
    if not partner.is_active:
        return "inactive"
    if not partner.is_configured:
        return "no URL or keys configured"
    if order.country not in partner.countries:
        return f"does not dispense in {order.country}"
    if order.country == "US":
        if not order.state and len(partner.us_states) < US_STATE_COUNT:
            return "the patient's state is unknown and the partner is not licensed in every state"
        if order.state and order.state not in partner.us_states:
            return f"not licensed in {order.state}"
    for item in order.items:
        if item.schedule and item.schedule not in partner.controlled_schedules:
            return f"does not handle schedule {item.schedule}"
        if item.cold_chain and not partner.cold_chain:
            return f"no cold chain for {item.product_code}"
        if partner.therapy_areas and item.therapy_area not in partner.therapy_areas:
            return f"does not handle {item.therapy_area or 'unclassified'} items"
        held = partner.stock.get(item.product_code)
        if held is not None and held < item.quantity:
            return f"out of stock: {item.product_code} (has {held}, needs {item.quantity.normalize()})"
    if partner.in_flight >= partner.capacity:
        return f"at capacity ({partner.in_flight} of {partner.capacity} orders in flight)"
    return None


def cost_minor(order: Order, partner: PartnerFacts) -> int:
    """What the partner charges for the order: its price per item, else its per-item fee."""
    return sum(
        int(partner.price_list.get(item.product_code, partner.fee_per_item_minor)) for item in order.items
    )


def load(partner: PartnerFacts) -> float:
    return partner.in_flight / partner.capacity


def stock_known(order: Order, partner: PartnerFacts) -> bool:
    """Every item's stock is reported fresh (and, being eligible, enough)."""
    return all(item.product_code in partner.stock for item in order.items)


def route(order: Order, partners: Sequence[PartnerFacts], *, tried: Iterable[str] = ()) -> Decision:
    """Choose among `partners`: eligible, then stock known, then cheapest, then least loaded."""
    tried = list(tried)
    passed_over: dict[str, str] = {}
    candidates = []
    for partner in partners:
        why = ineligibility(order, partner, tried=tried)
        if why is not None:
            passed_over[partner.code] = why
            continue
        candidates.append(
            Candidate(
                code=partner.code,
                cost_minor=cost_minor(order, partner),
                load=load(partner),
                stock_known=stock_known(order, partner),
            )
        )
    ranked = tuple(sorted(candidates, key=lambda c: (not c.stock_known, c.cost_minor, c.load, c.code)))
    if not ranked:
        return Decision(chosen=None, ranked=(), passed_over=passed_over)
    best = ranked[0]
    for candidate in ranked[1:]:
        passed_over[candidate.code] = _ranked_below(candidate, best)
    return Decision(chosen=best.code, ranked=ranked, passed_over=passed_over)


def _ranked_below(candidate: Candidate, best: Candidate) -> str:
    if best.stock_known and not candidate.stock_known:
        return "eligible, but its stock is unknown"
    if candidate.cost_minor > best.cost_minor:
        return f"eligible, but costs {candidate.cost_minor} against {best.cost_minor}"
    if candidate.load > best.load:
        return f"eligible, but busier ({candidate.load:.0%} of capacity against {best.load:.0%})"
    return "eligible, equal on cost and load; chosen by code"


# --- Reading the facts and applying the decision ------------------------------------------------


def order_for(prescription: Prescription) -> Order:
    """The routing view of a prescription (its items prefetched with their medications)."""
    country = prescription.clinic.jurisdiction
    state = (prescription.patient.region or "").strip().upper() if country == "US" else ""
    items = []
    for item in prescription.items.all():
        medication = item.medication
        schedule = medication.schedule_in(country).strip().upper()
        items.append(
            Item(
                product_code=medication.code,
                quantity=Decimal(item.quantity),
                schedule=f"{country}:{schedule}" if schedule else "",
                therapy_area=medication.therapeutic_class,
                cold_chain=medication.cold_chain,
            )
        )
    return Order(country=country, state=state, items=tuple(items))


# Every partner with its orders in flight and its fresh stock of the order's products: one
# statement whatever the number of partners.
_PARTNERS_SQL = (
    f"SELECT {rows.columns_sql(Partner, 'partner')},"
    " (SELECT COUNT(*)"
    f' FROM "{Dispatch._meta.db_table}" AS dispatch'
    f' JOIN "{Prescription._meta.db_table}" AS prescription ON prescription.id = dispatch.prescription_id'
    " WHERE dispatch.partner_id = partner.id AND dispatch.status = ANY(%s)"
    " AND prescription.status = ANY(%s)),"
    " (SELECT json_object_agg(stock.product_code, stock.quantity)::text"
    f' FROM "{PartnerStock._meta.db_table}" AS stock'
    " WHERE stock.partner_id = partner.id AND stock.product_code = ANY(%s) AND stock.updated_at >= %s)"
    f' FROM "{Partner._meta.db_table}" AS partner ORDER BY partner.code'
)


def partners_with_facts(*, product_codes: Iterable[str]) -> list[tuple[Partner, PartnerFacts]]:
    """Every partner (by code), with routing's view of it now."""
    fresh_after = timezone.now() - timedelta(seconds=settings.PARTNER_STOCK_MAX_AGE_SECONDS)
    params = (
        [Dispatch.Status.PENDING.value, Dispatch.Status.ACKNOWLEDGED.value],
        [str(status) for status in IN_FLIGHT_PRESCRIPTION_STATUSES],
        sorted(product_codes),
        fresh_after,
    )
    for _ in range(2):
        with rows.planned_cursor() as cursor:
            cursor.execute(_PARTNERS_SQL, params)
            found = cursor.fetchall()
        width = rows.column_count(Partner)
        partners = []
        for row in found:
            partner = rows.instance_from_columns(Partner, row[:width])
            assert partner is not None
            in_flight, stock = row[width], row[width + 1]
            partners.append((partner, _facts(partner, in_flight=in_flight, stock=json.loads(stock or "{}"))))
        if any(partner.code == DEFAULT_PARTNER_CODE for partner, _ in partners):
            break
        default_partner_ensure()  # its row is gone: made again, then read with the rest
    return partners


def _facts(partner: Partner, *, in_flight: int, stock: dict[str, int]) -> PartnerFacts:
    return PartnerFacts(
        code=partner.code,
        countries=frozenset(partner.countries),
        us_states=frozenset(state.upper() for state in partner.us_states),
        controlled_schedules=frozenset(schedule.upper() for schedule in partner.controlled_schedules),
        cold_chain=partner.cold_chain,
        therapy_areas=frozenset(partner.therapy_areas),
        fee_per_item_minor=partner.fee_per_item_minor,
        price_list=_price_list(partner.price_list),
        capacity=partner.capacity,
        in_flight=in_flight,
        stock=stock,
        is_active=partner.is_active,
        is_configured=_is_configured(partner),
    )


def default_partner_ensure() -> Partner:
    """The default partner (created by a migration; made again if its row is gone, so the
    gateway configured by GATEWAY_* is always a partner operators can switch off but not lose)."""
    partner, _ = Partner.objects.get_or_create(code=DEFAULT_PARTNER_CODE, defaults=DEFAULT_PARTNER)
    return partner


def _price_list(prices: object) -> dict[str, int]:
    if not isinstance(prices, dict):
        return {}
    return {str(code): price for code, price in prices.items() if isinstance(price, int) and price >= 0}


def _is_configured(partner: Partner) -> bool:
    try:
        partner_endpoint(partner)
    except PartnerNotConfigured:
        return False
    return True


def decide(*, dispatch: Dispatch) -> Decision:
    """The routing decision for a dispatch (its prescription's items prefetched)."""
    return _decide(dispatch)[0]


def _decide(dispatch: Dispatch) -> tuple[Decision, dict[str, Partner]]:
    """The decision, and the partners it was made among by code."""
    order = order_for(dispatch.prescription)
    partners = partners_with_facts(product_codes={item.product_code for item in order.items})
    tried = [str(entry.get("partner", "")) for entry in dispatch.partners_tried if isinstance(entry, dict)]
    decision = route(order, [facts for _, facts in partners], tried=tried)
    return decision, {partner.code: partner for partner, _ in partners}


def dispatch_route(*, dispatch: Dispatch) -> Partner | None:
    """Choose the dispatch's partner and record why; or hold it in the staff queue, saying why.
    None when it is held (or no longer pending)."""
    decision, partners = _decide(dispatch)
    if decision.chosen is None:
        dispatch_hold(dispatch_id=dispatch.pk, decision=decision, prescription_id=dispatch.prescription_id)
        return None
    return dispatch_assign(dispatch_id=dispatch.pk, decision=decision, partner=partners[decision.chosen])


# The guarded assignment, and the prescription's row lock its timeline event needs, with the
# prescription's clinic (prescriptions.services.prescription_record_event): one round trip.
_ASSIGN_SQL = (
    f'WITH assigned AS (UPDATE "{Dispatch._meta.db_table}" SET partner_id = %s, status = %s, routing = %s,'
    " last_error = '', updated_at = %s WHERE id = %s AND status = %s AND partner_id IS NULL"
    " RETURNING prescription_id)"
    " SELECT assigned.prescription_id, (SELECT p.clinic_id FROM"
    f' "{Prescription._meta.db_table}" AS p WHERE p.id = assigned.prescription_id FOR UPDATE)'
    " FROM assigned"
)


def dispatch_assign(
    *,
    dispatch_id: int,
    decision: Decision,
    from_status: str = Dispatch.Status.PENDING,
    partner: Partner | None = None,
) -> Partner | None:
    """Give the dispatch the chosen partner (guarded: only while it has none) and record the
    decision on the prescription's timeline. `partner` is the chosen partner's row, when the
    caller has it."""
    if partner is None:
        partner = Partner.objects.get(code=decision.chosen)
    routing = Dispatch._meta.get_field("routing").get_db_prep_save(decision.as_json(), connection)
    with transaction.atomic():
        with rows.planned_cursor() as cursor:
            cursor.execute(
                _ASSIGN_SQL,
                [
                    partner.pk,
                    Dispatch.Status.PENDING.value,
                    routing,
                    timezone.now(),
                    dispatch_id,
                    str(from_status),
                ],
            )
            updated = cursor.fetchone()
        if updated is None:
            return Dispatch.objects.get(pk=dispatch_id).partner
        prescription_id, clinic_id = updated
        prescriptions.prescription_record_event(
            prescription_id=prescription_id,
            locked_clinic_id=clinic_id,
            event_type="prescription.routed",
            payload={
                "partner": partner.code,
                "summary": f"Sent to {partner.name}.",
                "passed_over": decision.passed_over,
            },
            actor="routing",
        )
    logger.info("dispatch %s routed to %s", dispatch_id, partner.code)
    return partner


def dispatch_hold(*, dispatch_id: int, decision: Decision, prescription_id: int | None = None) -> bool:
    """No eligible partner: the dispatch waits in the staff queue with the reason."""
    reason = decision.reason
    with transaction.atomic():
        updated = Dispatch.objects.filter(
            pk=dispatch_id, status=Dispatch.Status.PENDING, partner__isnull=True
        ).update(
            status=Dispatch.Status.AWAITING_PARTNER,
            routing=decision.as_json(),
            last_error=reason[:1000],
            updated_at=timezone.now(),
        )
        if not updated:
            return False
        if prescription_id is None:
            prescription_id = Dispatch.objects.values_list("prescription_id", flat=True).get(pk=dispatch_id)
        prescriptions.prescription_record_event(
            prescription_id=prescription_id,
            event_type="prescription.awaiting_partner",
            payload={"reason": reason[:500], "summary": reason[:500], "passed_over": decision.passed_over},
            actor="routing",
        )
    logger.warning("dispatch %s waits for an eligible partner", dispatch_id)
    return True


def dispatches_waiting(*, limit: int) -> list[Dispatch]:
    return list(
        Dispatch.objects.filter(status=Dispatch.Status.AWAITING_PARTNER)
        .select_related("prescription__clinic", "prescription__patient")
        .prefetch_related("prescription__items__medication")
        .order_by("id")[:limit]
    )


def waiting_filter() -> Q:
    """Prescriptions whose dispatch waits for a partner (waiting on purpose, not stuck)."""
    return Q(dispatch__status=Dispatch.Status.AWAITING_PARTNER)
