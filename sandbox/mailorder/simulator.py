"""The simulated mail-order pharmacy: its orders, stock, counters and fault knobs, the walk of
each order through its statuses as time passes, and the state file that outlives a restart."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from sandbox import server
from sandbox.mailorder.contract import (
    CANCELLABLE,
    CANCELLED,
    DEFAULT_REJECTION_REASON,
    FILLED_OR_LATER,
    IN_REVIEW,
    NEXT_STATUS,
    RECEIVED,
    REJECTED,
    REJECTION_REASONS,
    RELEASES_STOCK,
    SHIPPED,
    US_STATES,
    ApiError,
    OrderRequest,
    parse_order,
)
from sandbox.server import Log

DEFAULT_API_KEY = "sim-mailorder-key"
DEFAULT_HANG_SECONDS = 30.0
DEFAULT_STEP_DELAY_SECONDS = 2.0
DEFAULT_STOCK = 1000
CARRIER = "UPS"
# The products carried from the start: every RxNorm-coded product of Scriptline's US
# formulary (a mail-order pharmacy stocks the common ones), DEFAULT_STOCK of each.
FORMULARY_FILE = Path(__file__).resolve().parent.parent.parent / "prescriptions" / "data" / "formulary.json"
RXNORM_SYSTEM = "http://www.nlm.nih.gov/research/umls/rxnorm"

log_to_stderr = server.log_to_stderr("mailorder-simulator")


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _new_tracking_number() -> str:
    # Not drawn from the seeded generator: tracking numbers must not repeat across restarts.
    alphabet = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    return "1Z" + "".join(random.SystemRandom().choice(alphabet) for _ in range(16))


@dataclass
class Order:
    order_id: str
    idempotency_key: str
    body_digest: str
    client_reference: str
    ship_to_state: str
    lines: list[dict[str, Any]]
    created_at: float
    status: str = RECEIVED
    # When the order entered its status (wall-clock seconds): the clock of its progression,
    # kept in the state file so a restarted simulator walks it on from where it was.
    status_since: float = 0.0
    history: list[dict[str, str]] = field(default_factory=list)
    carrier: str | None = None
    tracking_number: str | None = None
    rejection_code: str | None = None
    # To be rejected at review (reject_next), or lost: never moves again (lose_next).
    rejecting: str | None = None
    lost: bool = False

    def enter(self, status: str, at: float) -> None:
        self.status = status
        self.status_since = at
        self.history.append({"status": status, "at": iso_time(at)})

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.order_id,
            "object": "order",
            "status": self.status,
            "client_reference": self.client_reference,
            "created_at": iso_time(self.created_at),
            "updated_at": self.history[-1]["at"] if self.history else iso_time(self.created_at),
            "line_items": [
                {
                    "line_id": f"{self.order_id}-{index + 1}",
                    "client_line_id": line["client_line_id"],
                    "product": {"code_type": line["code_type"], "code": line["code"]},
                    "quantity": line["quantity"],
                }
                for index, line in enumerate(self.lines)
            ],
            "shipment": (
                {"carrier": self.carrier, "tracking_number": self.tracking_number}
                if self.tracking_number
                else None
            ),
            "rejection": (
                {"reason_code": self.rejection_code, "message": REJECTION_REASONS[self.rejection_code]}
                if self.rejection_code
                else None
            ),
            "status_history": list(self.history),
        }


@dataclass
class Knobs:
    latency: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    # Fraction of API requests answered 429 RATE_LIMITED.
    rate_limit_rate: float = 0.0
    hang: float = DEFAULT_HANG_SECONDS
    down: bool = False
    step_delay: float = DEFAULT_STEP_DELAY_SECONDS
    # Hold every order where it is (time stops for them until the stall is lifted).
    stall: bool = False
    # The next N orders accepted never move past RECEIVED (the vendor lost them).
    lose_next: int = 0
    # The next N orders accepted are rejected at review with reject_reason.
    reject_next: int = 0
    reject_reason: str = DEFAULT_REJECTION_REASON
    # Product codes refused as OUT_OF_STOCK (and listed with quantity 0), whatever the stock.
    out_of_stock: list[str] = field(default_factory=list)
    # USPS codes the pharmacy may ship to (NOT_LICENSED_IN_STATE elsewhere).
    licensed_states: list[str] = field(default_factory=lambda: sorted(US_STATES))


@dataclass
class Counters:
    requests: int = 0
    orders_created: int = 0
    replays: int = 0
    errors: int = 0
    timeouts: int = 0
    rate_limited: int = 0
    cancellations: int = 0
    rejections: int = 0
    refusals: dict[str, int] = field(default_factory=dict)


def codes(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(code, str) and code for code in value):
        raise ValueError(f"{name} must be a list of product codes")
    return [code.replace("-", "") for code in value]


def states(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(
        isinstance(state, str) and state in US_STATES for state in value
    ):
        raise ValueError(f"{name} must be a list of USPS state codes")
    return sorted(set(value))


def stock_levels(name: str, value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object of product code to quantity")
    return {
        str(code).replace("-", ""): server.count(f"{name}.{code}", quantity)
        for code, quantity in value.items()
    }


def rejection_reason(name: str, value: Any) -> str:
    if value not in REJECTION_REASONS:
        raise ValueError(f"{name} must be one of {', '.join(sorted(REJECTION_REASONS))}")
    return str(value)


def default_catalog() -> dict[str, int]:
    """DEFAULT_STOCK of every RxNorm-coded product of the US formulary."""
    try:
        medications = json.loads(FORMULARY_FILE.read_text(encoding="utf-8"))["medications"]
    except (OSError, ValueError, KeyError):
        return {}
    return {
        str(medication["code"]): DEFAULT_STOCK
        for medication in medications
        if medication.get("code_system") == RXNORM_SYSTEM
    }


class Simulator(server.Simulator):
    """Orders, stock, counters and fault knobs of one simulated mail-order pharmacy;
    thread-safe, and with a state file, a restart keeps orders, idempotency keys, stock and
    counters, and orders walk on from where they were."""

    knob_validators: ClassVar[Mapping[str, server.Validator]] = {
        "latency": server.number,
        "error_rate": server.fraction,
        "timeout_rate": server.fraction,
        "rate_limit_rate": server.fraction,
        "hang": server.number,
        "down": server.flag,
        "step_delay": server.number,
        "stall": server.flag,
        "lose_next": server.count,
        "reject_next": server.count,
        "reject_reason": rejection_reason,
        "out_of_stock": codes,
        "licensed_states": states,
    }

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        latency: float = 0.0,
        error_rate: float = 0.0,
        timeout_rate: float = 0.0,
        hang: float = DEFAULT_HANG_SECONDS,
        step_delay: float = DEFAULT_STEP_DELAY_SECONDS,
        out_of_stock: Sequence[str] = (),
        licensed_states: Sequence[str] | None = None,
        seed: int | None = None,
        log: Log = log_to_stderr,
        state_file: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        knobs = Knobs(
            latency=latency,
            error_rate=error_rate,
            timeout_rate=timeout_rate,
            hang=hang,
            step_delay=step_delay,
            out_of_stock=codes("out_of_stock", list(out_of_stock)),
        )
        if licensed_states is not None:
            knobs.licensed_states = states("licensed_states", list(licensed_states))
        super().__init__(
            api_key=api_key, webhook_secret="", knobs=knobs, seed=seed, log=log, state_file=state_file
        )
        self._knobs: Knobs = knobs
        self._clock = clock
        self._orders_by_id: dict[str, Order] = {}
        self._orders_by_key: dict[str, Order] = {}
        self._stock = default_catalog()
        self._counters = Counters()
        # Order numbers start somewhere random so two fresh simulators rarely share one.
        self._next_number = random.SystemRandom().randrange(1, 900_000)

    # State

    def snapshot(self) -> dict[str, Any]:
        return {
            "orders": [asdict(order) for order in self._orders_by_id.values()],
            "stock": self._stock,
            "counters": asdict(self._counters),
            "next_number": self._next_number,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        orders = [Order(**fields) for fields in state["orders"]]
        self._orders_by_id = {order.order_id: order for order in orders}
        self._orders_by_key = {order.idempotency_key: order for order in orders}
        self._stock = {str(code): int(quantity) for code, quantity in state["stock"].items()}
        self._counters = Counters(**state["counters"])
        self._next_number = int(state["next_number"])

    def reset(self) -> None:
        with self._lock:
            self._orders_by_id.clear()
            self._orders_by_key.clear()
            self._stock = default_catalog()
            self._counters = Counters()
            self._random = random.Random(self._seed)
            self.save()

    def update_knobs(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Walk orders on under the knobs they were waiting with before any change, so a step
        delay or a stall counts from the moment it is set."""
        with self._lock:
            self._advance_all()
            return super().update_knobs(changes)

    def set_stock(self, levels: Mapping[str, Any]) -> dict[str, int]:
        """`POST /_stock`: set the quantity of the products named (others unchanged)."""
        validated = stock_levels("stock", dict(levels))
        with self._lock:
            self._stock.update(validated)
            self.save()
            return dict(self._stock)

    # Requests

    def is_authorized(self, authorization_header: str | None) -> bool:
        """The vendor's API key, sent as `X-Api-Key` (not a bearer token)."""
        return hmac.compare_digest((authorization_header or "").encode(), self.api_key.encode())

    def injected_fault(self) -> str | None:
        """An error code, or None."""
        return self.fault_draw(
            [
                ("error_rate", "errors", "SERVICE_UNAVAILABLE"),
                ("timeout_rate", "timeouts", "GATEWAY_TIMEOUT"),
                ("rate_limit_rate", "rate_limited", "RATE_LIMITED"),
            ]
        )

    def refused(self, code: str) -> None:
        with self._lock:
            self._counters.refusals[code] = self._counters.refusals.get(code, 0) + 1

    # Orders

    def submit_order(self, idempotency_key: str, body: bytes) -> tuple[Order, bool]:
        """The order for this key, made now or earlier (True when replayed); ApiError if refused."""
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            self._advance_all()
            existing = self._orders_by_key.get(idempotency_key)
            if existing is not None:
                if not hmac.compare_digest(existing.body_digest, digest):
                    raise ApiError("IDEMPOTENCY_KEY_REUSED")
                self._counters.replays += 1
                self.save()
                return existing, True
            try:
                payload = json.loads(body)
            except (UnicodeDecodeError, ValueError) as error:
                raise ApiError("VALIDATION_ERROR", [{"field": "", "issue": "body is not JSON"}]) from error
            request = parse_order(payload)
            self._check_can_fill(request)
            order = self._create(idempotency_key, digest, request)
        self.log(f"received order {order.order_id}")
        return order, False

    def _check_can_fill(self, request: OrderRequest) -> None:
        """The business refusals, in the order the vendor checks them (lock held)."""
        knobs = self._knobs
        if request.ship_to_state not in knobs.licensed_states:
            raise ApiError("NOT_LICENSED_IN_STATE", [{"field": "shipping_address.state"}])
        for index, line in enumerate(request.lines):
            where = [{"field": f"line_items[{index}]", "product_code": line.code}]
            if line.code not in self._stock:
                raise ApiError("PRODUCT_NOT_CARRIED", where)
            if line.code in knobs.out_of_stock or self._stock[line.code] < line.quantity:
                raise ApiError("OUT_OF_STOCK", where)
        duplicate = next(
            (
                order
                for order in self._orders_by_id.values()
                if order.client_reference == request.client_reference and order.status not in RELEASES_STOCK
            ),
            None,
        )
        if duplicate is not None:
            raise ApiError(
                "DUPLICATE", [{"field": "client_reference", "existing_order_id": duplicate.order_id}]
            )

    def _create(self, idempotency_key: str, digest: str, request: OrderRequest) -> Order:
        now = self._clock()
        order = Order(
            order_id=f"MO-{self._next_number:06d}",
            idempotency_key=idempotency_key,
            body_digest=digest,
            client_reference=request.client_reference,
            ship_to_state=request.ship_to_state,
            lines=[asdict(line) for line in request.lines],
            created_at=now,
        )
        order.enter(RECEIVED, now)
        self._next_number += 1
        for line in request.lines:
            self._stock[line.code] -= int(line.quantity)
        knobs = self._knobs
        if knobs.lose_next > 0:
            knobs.lose_next -= 1
            order.lost = True
        elif knobs.reject_next > 0:
            knobs.reject_next -= 1
            order.rejecting = knobs.reject_reason
        self._orders_by_id[order.order_id] = order
        self._orders_by_key[idempotency_key] = order
        self._counters.orders_created += 1
        # Saved before the answer: an accepted order survives a crash that follows.
        self.save()
        return order

    def order(self, order_id: str) -> Order:
        with self._lock:
            self._advance_all()
            order = self._orders_by_id.get(order_id)
            if order is None:
                raise ApiError("ORDER_NOT_FOUND")
            return Order(**asdict(order))

    def cancel_order(self, order_id: str) -> Order:
        """Cancel an order not yet filled; cancelling a cancelled order answers it again."""
        with self._lock:
            self._advance_all()
            order = self._orders_by_id.get(order_id)
            if order is None:
                raise ApiError("ORDER_NOT_FOUND")
            if order.status in FILLED_OR_LATER:
                raise ApiError("ORDER_ALREADY_FILLED", [{"status": order.status}])
            if order.status == REJECTED:
                raise ApiError("ORDER_NOT_CANCELLABLE", [{"status": order.status}])
            if order.status in CANCELLABLE:
                order.enter(CANCELLED, self._clock())
                self._release(order)
                self._counters.cancellations += 1
                self.save()
                self.log(f"cancelled order {order_id}")
            return Order(**asdict(order))

    def inventory(self) -> list[tuple[str, str, int]]:
        """(product code, code type, quantity on hand) for every product carried."""
        with self._lock:
            self._advance_all()
            out_of_stock = set(self._knobs.out_of_stock)
            return [
                (
                    code,
                    "NDC" if len(code) == 11 else "RXNORM",
                    0 if code in out_of_stock else max(quantity, 0),
                )
                for code, quantity in sorted(self._stock.items())
            ]

    def _release(self, order: Order) -> None:
        for line in order.lines:
            if line["code"] in self._stock:
                self._stock[line["code"]] += int(line["quantity"])

    def _advance_all(self) -> None:
        """Walk every open order on by the time passed since it entered its status, one step
        per step_delay (lock held); a stall holds them and restarts their clocks."""
        now = self._clock()
        knobs = self._knobs
        changed = False
        for order in self._orders_by_id.values():
            if order.status not in NEXT_STATUS or order.lost:
                continue
            if knobs.stall:
                # Not saved: knobs are not kept, so a restarted simulator is no longer stalled.
                order.status_since = now
                continue
            while order.status in NEXT_STATUS and now - order.status_since >= knobs.step_delay:
                self._step(order, order.status_since + knobs.step_delay)
                changed = True
        if changed:
            self.save()

    def _step(self, order: Order, at: float) -> None:
        if order.status == IN_REVIEW and order.rejecting:
            order.rejection_code = order.rejecting
            order.enter(REJECTED, at)
            self._release(order)
            self._counters.rejections += 1
            return
        status = NEXT_STATUS[order.status]
        if status == SHIPPED:
            order.carrier = CARRIER
            order.tracking_number = _new_tracking_number()
        order.enter(status, at)

    # Statistics

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._advance_all()
            statuses: dict[str, int] = {}
            for order in self._orders_by_id.values():
                statuses[order.status] = statuses.get(order.status, 0) + 1
            return {
                "orders": len(self._orders_by_id),
                **asdict(self._counters),
                "statuses": statuses,
                "orders_by_key": {key: order.order_id for key, order in self._orders_by_key.items()},
            }
