"""Mail-order pharmacy simulator: a US mail-order pharmacy's JSON order API, the second pharmacy
partner, with a contract of its own (not FHIR, no webhooks).

``POST /v2/orders`` takes an order in the vendor's JSON (patient, shipping address, prescriber
NPI/DEA, line items by NDC or RxNorm code) with an ``Idempotency-Key`` header (same key and
body: the same order, answered again; same key, other body: ``IDEMPOTENCY_KEY_REUSED``) and
answers with the vendor's order id (``MO-000123``). Orders are tracked by polling
``GET /v2/orders/{id}``: they walk RECEIVED → IN_REVIEW → FILLED → SHIPPED (carrier and
tracking number) → DELIVERED, one step per ``step_delay`` seconds, or end CANCELLED
(``POST /v2/orders/{id}/cancel``, refused once filled) or REJECTED (with a reason code).
``GET /v2/inventory.csv`` lists stock by product code. Every request carries ``X-Api-Key``.
Errors are ``{"error": {"code": ..., "message": ...}}``.

Fault knobs (command line, or ``POST /_control`` at run time): latency, error rate (503),
timeout rate (a hang, then 504), down, out-of-stock products, licensed states, a stall that
holds every order where it is, ``lose_next`` (orders that never move again) and
``reject_next`` (orders rejected at review). ``GET /_stats`` counts, ``POST /_reset`` clears.

Standard library only (with sandbox/server.py); it needs no Django settings or database, so
it runs as ``python -m sandbox.mailorder`` as well as ``manage.py run_mailorder_simulator``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import hmac
import io
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar

from sandbox import server
from sandbox.server import Log, SimulatorHandler, SimulatorServer, rate, seconds

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8766
DEFAULT_API_KEY = "sim-mailorder-key"
API_KEY_HEADER = "X-Api-Key"
DEFAULT_HANG_SECONDS = 30.0
DEFAULT_STEP_DELAY_SECONDS = 2.0
DEFAULT_STOCK = 1000
MAXIMUM_BODY_BYTES = 256 * 1024
MAXIMUM_LINE_ITEMS = 20
CARRIER = "UPS"
# The products carried from the start: every RxNorm-coded product of Scriptline's US
# formulary (a mail-order pharmacy stocks the common ones), DEFAULT_STOCK of each.
FORMULARY_FILE = Path(__file__).resolve().parent.parent / "prescriptions" / "data" / "formulary.json"
RXNORM_SYSTEM = "http://www.nlm.nih.gov/research/umls/rxnorm"

OPTION_NAMES = (
    "host",
    "port",
    "api_key",
    "latency",
    "error_rate",
    "timeout_rate",
    "hang",
    "step_delay",
    "out_of_stock",
    "licensed_states",
    "seed",
    "state_file",
)

log_to_stderr = server.log_to_stderr("mailorder-simulator")

# USPS codes of the states, DC and the territories a US pharmacy licence can cover.
# fmt: off
US_STATES = frozenset({
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL",
    "IN", "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE",
    "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD",
    "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY", "PR", "VI", "GU", "AS", "MP",
})
# fmt: on

# The vendor's order statuses, and where each goes next when time passes.
RECEIVED = "RECEIVED"
IN_REVIEW = "IN_REVIEW"
FILLED = "FILLED"
SHIPPED = "SHIPPED"
DELIVERED = "DELIVERED"
CANCELLED = "CANCELLED"
REJECTED = "REJECTED"
NEXT_STATUS: Mapping[str, str] = {RECEIVED: IN_REVIEW, IN_REVIEW: FILLED, FILLED: SHIPPED, SHIPPED: DELIVERED}
CANCELLABLE = frozenset({RECEIVED, IN_REVIEW})
FILLED_OR_LATER = frozenset({FILLED, SHIPPED, DELIVERED})
# Orders holding stock: it is reserved on acceptance and given back on cancel or rejection.
RELEASES_STOCK = frozenset({CANCELLED, REJECTED})

# Why the pharmacist rejects an order at review (the `reject_next` knob picks one).
REJECTION_REASONS: Mapping[str, str] = {
    "PRESCRIBER_VERIFICATION_FAILED": "The prescriber could not be verified.",
    "PRESCRIPTION_INVALID": "The prescription is not valid for dispensing.",
    "DRUG_INTERACTION": "The pharmacist found a drug interaction needing prescriber review.",
    "OUT_OF_STOCK": "The product went out of stock before filling.",
}
DEFAULT_REJECTION_REASON = "PRESCRIPTION_INVALID"


@dataclass(frozen=True)
class ErrorKind:
    status: HTTPStatus
    message: str


# Every error code the API answers with, its HTTP status and its fixed message (messages never
# echo what was sent: the request carries patient data).
ERRORS: Mapping[str, ErrorKind] = {
    "UNAUTHORIZED": ErrorKind(HTTPStatus.UNAUTHORIZED, "Missing or invalid API key."),
    "VALIDATION_ERROR": ErrorKind(HTTPStatus.BAD_REQUEST, "The order failed validation; see details."),
    "INVALID_NDC": ErrorKind(HTTPStatus.BAD_REQUEST, "An NDC must be 11 digits (5-4-2, dashes optional)."),
    "INVALID_RXNORM": ErrorKind(HTTPStatus.BAD_REQUEST, "An RxNorm code must be an RxCUI (digits)."),
    "INVALID_NPI": ErrorKind(HTTPStatus.BAD_REQUEST, "The prescriber NPI is not a valid NPI."),
    "INVALID_DEA": ErrorKind(HTTPStatus.BAD_REQUEST, "The prescriber DEA number is not valid."),
    "IDEMPOTENCY_KEY_REQUIRED": ErrorKind(HTTPStatus.BAD_REQUEST, "The Idempotency-Key header is required."),
    "IDEMPOTENCY_KEY_REUSED": ErrorKind(
        HTTPStatus.UNPROCESSABLE_ENTITY, "The Idempotency-Key was used with a different request."
    ),
    "DUPLICATE": ErrorKind(HTTPStatus.CONFLICT, "An open order already exists for this client_reference."),
    "OUT_OF_STOCK": ErrorKind(HTTPStatus.UNPROCESSABLE_ENTITY, "A line item is out of stock."),
    "NOT_LICENSED_IN_STATE": ErrorKind(
        HTTPStatus.UNPROCESSABLE_ENTITY, "The pharmacy is not licensed to ship to this state."
    ),
    "PRODUCT_NOT_CARRIED": ErrorKind(
        HTTPStatus.UNPROCESSABLE_ENTITY, "A line item is not a product we carry."
    ),
    "ORDER_NOT_FOUND": ErrorKind(HTTPStatus.NOT_FOUND, "No such order."),
    "ORDER_ALREADY_FILLED": ErrorKind(
        HTTPStatus.CONFLICT, "The order is filled and can no longer be cancelled."
    ),
    "ORDER_NOT_CANCELLABLE": ErrorKind(
        HTTPStatus.CONFLICT, "The order was rejected and cannot be cancelled."
    ),
    "PAYLOAD_TOO_LARGE": ErrorKind(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "The request body is too large."),
    "NOT_FOUND": ErrorKind(HTTPStatus.NOT_FOUND, "No such endpoint."),
    "METHOD_NOT_ALLOWED": ErrorKind(HTTPStatus.METHOD_NOT_ALLOWED, "Method not allowed here."),
    "SERVICE_UNAVAILABLE": ErrorKind(HTTPStatus.SERVICE_UNAVAILABLE, "Temporarily unavailable; retry later."),
    "GATEWAY_TIMEOUT": ErrorKind(HTTPStatus.GATEWAY_TIMEOUT, "The request timed out upstream."),
}


class ApiError(Exception):
    """An error answer: its code (a key of ERRORS) and optional details (field names, codes)."""

    def __init__(self, code: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.details = details or []

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": ERRORS[self.code].message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


# --- Validating an order ---------------------------------------------------------------------


POSTAL_CODE = re.compile(r"\d{5}(-\d{4})?")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
NDC = re.compile(r"\d{11}|\d{5}-\d{4}-\d{2}")
RXCUI = re.compile(r"\d{1,9}")
DEA = re.compile(r"[A-Z][A-Z9](\d{7})")
SEXES = frozenset({"F", "M", "U"})
CODE_TYPES = frozenset({"NDC", "RXNORM"})


@dataclass(frozen=True)
class LineRequest:
    code_type: str
    code: str
    quantity: float
    client_line_id: str


@dataclass(frozen=True)
class OrderRequest:
    """What the simulator keeps of an accepted order request (no patient data)."""

    client_reference: str
    ship_to_state: str
    lines: tuple[LineRequest, ...]


def npi_is_valid(npi: str) -> bool:
    """Ten digits whose last is the Luhn check digit of "80840" + the first nine (CMS rule)."""
    if not re.fullmatch(r"\d{10}", npi):
        return False
    digits = [int(digit) for digit in "80840" + npi[:9]]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 0:
            digit *= 2
            digit = digit - 9 if digit > 9 else digit
        total += digit
    return (10 - total % 10) % 10 == int(npi[9])


def dea_is_valid(dea: str) -> bool:
    """Two letters and seven digits; the last digit checks the other six (DEA's rule)."""
    match = DEA.fullmatch(dea)
    if match is None:
        return False
    d = [int(digit) for digit in match.group(1)]
    return (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10 == d[6]


def _text(
    source: Mapping[str, Any], key: str, path: str, problems: list[dict[str, Any]], *, required: bool
) -> str:
    value = source.get(key)
    if value is None or value == "":
        if required:
            problems.append({"field": f"{path}{key}", "issue": "required"})
        return ""
    if not isinstance(value, str) or len(value) > 200:
        problems.append({"field": f"{path}{key}", "issue": "must be a string of at most 200 characters"})
        return ""
    return value.strip()


def _object(source: Mapping[str, Any], key: str, problems: list[dict[str, Any]]) -> Mapping[str, Any]:
    value = source.get(key)
    if not isinstance(value, dict):
        problems.append({"field": key, "issue": "required object"})
        return {}
    return value


def parse_order(payload: Any) -> OrderRequest:
    """Check an order request as the vendor does; ApiError names what is wrong by field."""
    if not isinstance(payload, dict):
        raise ApiError("VALIDATION_ERROR", [{"field": "", "issue": "body must be a JSON object"}])
    problems: list[dict[str, Any]] = []
    client_reference = _text(payload, "client_reference", "", problems, required=True)
    patient = _object(payload, "patient", problems)
    _text(patient, "first_name", "patient.", problems, required=False)
    _text(patient, "last_name", "patient.", problems, required=True)
    if not DATE.fullmatch(
        _text(patient, "date_of_birth", "patient.", problems, required=True) or "0000-00-00"
    ):
        problems.append({"field": "patient.date_of_birth", "issue": "must be YYYY-MM-DD"})
    if patient.get("sex") not in SEXES:
        problems.append({"field": "patient.sex", "issue": "must be F, M or U"})
    address = _object(payload, "shipping_address", problems)
    for key in ("line1", "city"):
        _text(address, key, "shipping_address.", problems, required=True)
    state = _text(address, "state", "shipping_address.", problems, required=True)
    if state and state not in US_STATES:
        problems.append({"field": "shipping_address.state", "issue": "must be a USPS state code"})
    postal_code = _text(address, "postal_code", "shipping_address.", problems, required=True)
    if postal_code and not POSTAL_CODE.fullmatch(postal_code):
        problems.append({"field": "shipping_address.postal_code", "issue": "must be a ZIP or ZIP+4"})
    if address.get("country", "US") != "US":
        problems.append({"field": "shipping_address.country", "issue": "we ship within the US only"})
    prescriber = _object(payload, "prescriber", problems)
    _text(prescriber, "last_name", "prescriber.", problems, required=True)
    npi = _text(prescriber, "npi", "prescriber.", problems, required=True)
    dea = _text(prescriber, "dea", "prescriber.", problems, required=False)
    lines = _line_items(payload.get("line_items"), problems)
    if problems:
        raise ApiError("VALIDATION_ERROR", problems)
    if not npi_is_valid(npi):
        raise ApiError("INVALID_NPI", [{"field": "prescriber.npi"}])
    if dea and not dea_is_valid(dea):
        raise ApiError("INVALID_DEA", [{"field": "prescriber.dea"}])
    for index, line in enumerate(lines):
        if line.code_type == "NDC" and not NDC.fullmatch(line.code):
            raise ApiError("INVALID_NDC", [{"field": f"line_items[{index}].product.code"}])
        if line.code_type == "RXNORM" and not RXCUI.fullmatch(line.code):
            raise ApiError("INVALID_RXNORM", [{"field": f"line_items[{index}].product.code"}])
    return OrderRequest(client_reference=client_reference, ship_to_state=state, lines=tuple(lines))


def _line_items(value: Any, problems: list[dict[str, Any]]) -> list[LineRequest]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAXIMUM_LINE_ITEMS:
        problems.append({"field": "line_items", "issue": f"must list 1 to {MAXIMUM_LINE_ITEMS} items"})
        return []
    lines = []
    for index, item in enumerate(value):
        path = f"line_items[{index}]."
        if not isinstance(item, dict):
            problems.append({"field": f"line_items[{index}]", "issue": "must be an object"})
            continue
        product = item.get("product")
        if not isinstance(product, dict):
            product = {}
        code_type = product.get("code_type")
        if code_type not in CODE_TYPES:
            problems.append({"field": f"{path}product.code_type", "issue": "must be NDC or RXNORM"})
        code = _text(product, "code", f"{path}product.", problems, required=True)
        quantity = item.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int | float) or not 0 < quantity <= 10_000:
            problems.append({"field": f"{path}quantity", "issue": "must be a number above 0"})
            quantity = 0
        days_supply = item.get("days_supply")
        if isinstance(days_supply, bool) or not isinstance(days_supply, int) or not 1 <= days_supply <= 365:
            problems.append(
                {"field": f"{path}days_supply", "issue": "must be a whole number of days, 1 to 365"}
            )
        _text(item, "sig", path, problems, required=True)
        client_line_id = _text(item, "client_line_id", path, problems, required=False)
        lines.append(
            LineRequest(
                str(code_type),
                code.replace("-", "") if code_type == "NDC" else code,
                float(quantity),
                client_line_id,
            )
        )
    return lines


# --- State -----------------------------------------------------------------------------------


def _iso(timestamp: float) -> str:
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
        self.history.append({"status": status, "at": _iso(at)})

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.order_id,
            "object": "order",
            "status": self.status,
            "client_reference": self.client_reference,
            "created_at": _iso(self.created_at),
            "updated_at": self.history[-1]["at"] if self.history else _iso(self.created_at),
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

    def record_request(self) -> None:
        with self._lock:
            self._counters.requests += 1

    def injected_fault(self) -> str | None:
        """One draw partitions requests so each rate is its exact share: an error code or None."""
        with self._lock:
            knobs = self._knobs
            draw = self._random.random()
            if knobs.down or draw < knobs.error_rate:
                self._counters.errors += 1
                return "SERVICE_UNAVAILABLE"
            if draw < knobs.error_rate + knobs.timeout_rate:
                self._counters.timeouts += 1
                return "GATEWAY_TIMEOUT"
            return None

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
                order.status_since = now
                changed = True
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


# --- HTTP --------------------------------------------------------------------------------------


ORDERS_PATH = "/v2/orders"
INVENTORY_PATH = "/v2/inventory.csv"
ORDER_PATH = re.compile(r"/v2/orders/(MO-\d{1,12})")
CANCEL_PATH = re.compile(r"/v2/orders/(MO-\d{1,12})/cancel")


class MailOrderRequestHandler(SimulatorHandler):
    server_version = "MailOrderPharmacySimulator/2.0"
    maximum_body_bytes = MAXIMUM_BODY_BYTES
    _body: bytes | None = b""

    @property
    def simulator(self) -> Simulator:
        return self.server.simulator

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if match := ORDER_PATH.fullmatch(path):
            self._api(lambda: self._send_order(HTTPStatus.OK, self.simulator.order(match.group(1))))
        elif path == INVENTORY_PATH:
            self._api(self._inventory)
        elif path == "/health":
            self.send_json(HTTPStatus.OK, {"status": "ok"})
        elif path == "/_stats":
            self.send_json(HTTPStatus.OK, self.simulator.stats())
        elif path == "/_control":
            self.send_json(HTTPStatus.OK, self.simulator.knobs())
        else:
            self._send_error(
                ApiError("METHOD_NOT_ALLOWED" if path in {ORDERS_PATH, "/_reset"} else "NOT_FOUND")
            )

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == ORDERS_PATH:
            self._api(self._submit, with_body=True)
        elif match := CANCEL_PATH.fullmatch(path):
            self._api(lambda: self._send_order(HTTPStatus.OK, self.simulator.cancel_order(match.group(1))))
        elif path == "/_control":
            self.answer_control(self.simulator, self.read_body())
        elif path == "/_stock":
            self._set_stock()
        elif path == "/_reset":
            self.read_body()
            self.simulator.reset()
            self.send_json(HTTPStatus.OK, self.simulator.stats())
        else:
            known = path in {INVENTORY_PATH, "/health", "/_stats"} or ORDER_PATH.fullmatch(path) is not None
            self._send_error(ApiError("METHOD_NOT_ALLOWED" if known else "NOT_FOUND"))

    def _api(self, answer: Any, *, with_body: bool = False) -> None:
        """The vendor API's common path: count, latency, faults, the API key, then `answer`;
        an ApiError becomes the vendor's error body."""
        simulator = self.simulator
        simulator.record_request()
        self._body = self.read_body() if with_body or self.command == "POST" else b""
        try:
            if self._body is None:
                raise ApiError("PAYLOAD_TOO_LARGE")
            simulator.sleep(simulator.knobs()["latency"])
            fault = simulator.injected_fault()
            if fault == "GATEWAY_TIMEOUT":
                simulator.sleep(simulator.knobs()["hang"])
            if fault is not None:
                raise ApiError(fault)
            if not simulator.is_authorized(self.headers.get(API_KEY_HEADER)):
                raise ApiError("UNAUTHORIZED")
            answer()
        except ApiError as error:
            simulator.refused(error.code)
            self._send_error(error)

    def _submit(self) -> None:
        idempotency_key = (self.headers.get("Idempotency-Key") or "").strip()
        if not idempotency_key or len(idempotency_key) > 255:
            raise ApiError("IDEMPOTENCY_KEY_REQUIRED")
        order, replayed = self.simulator.submit_order(idempotency_key, self._body or b"")
        if replayed:
            self._send_order(HTTPStatus.OK, order, replayed=True)
        else:
            self._send_order(HTTPStatus.CREATED, order)

    def _inventory(self) -> None:
        as_of = _iso(time.time())
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["product_code", "code_type", "quantity", "as_of"])
        for code, code_type, quantity in self.simulator.inventory():
            writer.writerow([code, code_type, quantity, as_of])
        body = text.getvalue().encode("utf-8")
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/csv; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _set_stock(self) -> None:
        try:
            levels = json.loads(self.read_body() or b"{}")
            if not isinstance(levels, dict):
                raise ValueError("body must be a JSON object of product code to quantity")
            stock = self.simulator.set_stock(levels)
        except ValueError as error:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            return
        self.send_json(HTTPStatus.OK, stock)

    def _send_order(self, status: HTTPStatus, order: Order, *, replayed: bool = False) -> None:
        self.send_json(
            status, order.as_json(), extra_headers={"Idempotent-Replayed": "true"} if replayed else None
        )

    def _send_error(self, error: ApiError) -> None:
        kind = ERRORS[error.code]
        headers = (
            {"WWW-Authenticate": f'ApiKey header="{API_KEY_HEADER}"'} if error.code == "UNAUTHORIZED" else {}
        )
        if error.code == "SERVICE_UNAVAILABLE":
            headers["Retry-After"] = "1"
        self.send_json(kind.status, error.body(), extra_headers=headers)


def make_server(host: str, port: int, simulator: Simulator) -> SimulatorServer:
    """Bind (port 0 picks a free port) without serving; call serve_forever()."""
    return SimulatorServer((host, port), MailOrderRequestHandler, simulator)


def serve(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    api_key: str = DEFAULT_API_KEY,
    latency: float = 0.0,
    error_rate: float = 0.0,
    timeout_rate: float = 0.0,
    hang: float = DEFAULT_HANG_SECONDS,
    step_delay: float = DEFAULT_STEP_DELAY_SECONDS,
    out_of_stock: Sequence[str] = (),
    licensed_states: Sequence[str] | None = None,
    seed: int | None = None,
    state_file: Path | None = None,
) -> None:
    """Load the saved state and run until SIGTERM or SIGINT."""
    simulator = Simulator(
        api_key=api_key,
        latency=latency,
        error_rate=error_rate,
        timeout_rate=timeout_rate,
        hang=hang,
        step_delay=step_delay,
        out_of_stock=out_of_stock,
        licensed_states=licensed_states,
        seed=seed,
        state_file=state_file,
    )
    if simulator.load():
        simulator.log(f"loaded {simulator.stats()['orders']} order(s) from {state_file}")
    server.run_until_stopped(
        make_server(host, port, simulator), simulator, name="mail-order pharmacy simulator"
    )


def _code_list(text: str) -> list[str]:
    return [code.strip() for code in text.split(",") if code.strip()]


def _state_list(text: str) -> list[str]:
    listed = [state.strip().upper() for state in text.split(",") if state.strip()]
    unknown = sorted(set(listed) - US_STATES)
    if unknown:
        raise argparse.ArgumentTypeError(f"not USPS state codes: {', '.join(unknown)}")
    return listed


def add_arguments(
    parser: argparse.ArgumentParser,
    environment: Mapping[str, str] | None = None,
    preferred_defaults: Mapping[str, Any] | None = None,
) -> None:
    """Declare the simulator options; shared by main() and the Django command. Defaults come
    from ``preferred_defaults`` (non-None values), then the environment, then built-in values."""
    default = server.option_defaults(os.environ if environment is None else environment, preferred_defaults)
    parser.add_argument("--host", default=default("host", None, DEFAULT_HOST))
    parser.add_argument("--port", type=int, default=int(default("port", "MAILORDER_SIM_PORT", DEFAULT_PORT)))
    parser.add_argument("--api-key", default=default("api_key", "MAILORDER_API_KEY", DEFAULT_API_KEY))
    parser.add_argument("--latency", type=seconds, default=0.0, help="seconds added before each API answer")
    parser.add_argument("--error-rate", type=rate, default=0.0, help="fraction of API requests answered 503")
    parser.add_argument("--timeout-rate", type=rate, default=0.0, help="fraction of API requests that hang")
    parser.add_argument(
        "--hang", type=seconds, default=DEFAULT_HANG_SECONDS, help="seconds a hanging request sleeps"
    )
    parser.add_argument(
        "--step-delay",
        type=seconds,
        default=float(default("step_delay", "MAILORDER_STEP_DELAY", DEFAULT_STEP_DELAY_SECONDS)),
        help="seconds an order spends in each status before the next",
    )
    # A string default goes through `type` too, so a bad environment value is refused as an
    # argument would be.
    parser.add_argument(
        "--out-of-stock",
        type=_code_list,
        default=default("out_of_stock", "MAILORDER_OUT_OF_STOCK", []),
        help="comma-separated product codes refused as OUT_OF_STOCK",
    )
    parser.add_argument(
        "--licensed-states",
        type=_state_list,
        default=default("licensed_states", "MAILORDER_LICENSED_STATES", None),
        help="comma-separated USPS codes the pharmacy ships to (default: all)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible fault injection")
    server.add_state_arguments(parser, name="mailorder", webhooks=False)


def options_from(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """Pick serve()'s keyword arguments out of parsed options."""
    return server.options_from(parsed, OPTION_NAMES)


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.mailorder", description=__doc__.splitlines()[0])
    add_arguments(parser)
    serve(**options_from(vars(parser.parse_args(arguments))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
