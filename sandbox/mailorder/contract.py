"""The mail-order pharmacy's API contract as the simulator holds clients to it: its order
statuses, its error codes with their HTTP statuses and fixed messages, and the checks an order
request must pass (field by field, then NPI, DEA, NDC and RxNorm code formats)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

API_KEY_HEADER = "X-Api-Key"
MAXIMUM_LINE_ITEMS = 20

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
    "RATE_LIMITED": ErrorKind(HTTPStatus.TOO_MANY_REQUESTS, "Too many requests; retry later."),
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
