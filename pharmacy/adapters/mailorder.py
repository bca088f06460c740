"""The mail-order pharmacy adapter: the only module that talks to the US mail-order partner.

An anti-corruption layer. The partner has its own contract (a JSON order API, its own order
ids, statuses and error codes, status by polling); this module translates our canonical FHIR
message Bundle (the Scriptline US profile, pharmacy/fhir/scriptline.py) into its order JSON
and its answers back into the gateway port (pharmacy/gateway.py), through the explicit tables
below. Nothing of the partner's vocabulary leaves this module.

Exception messages and logs name fields, codes and HTTP statuses only, never patient data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from urllib.parse import quote

import requests

from pharmacy.fhir.scriptline import (
    DEA_SYSTEM,
    MESSAGE_EVENT_SYSTEM,
    NPI_SYSTEM,
    PRESCRIPTION_ITEM_SYSTEM,
    PRESCRIPTION_SYSTEM,
    RXNORM_SYSTEM,
)
from pharmacy.gateway import (
    GatewayRejected,
    GatewayUnavailable,
    OrderAcknowledgement,
    OrderAlreadyDispensed,
    OrderStatus,
    OrderUnknown,
    PartnerCannotFill,
)

API_KEY_HEADER: Final = "X-Api-Key"
NDC_SYSTEM: Final = "http://hl7.org/fhir/sid/ndc"
# Why we could not even ask: the order holds something this partner's contract cannot carry
# (not a Scriptline US message, no US shipping address, no NPI, a drug code it does not take).
# Another partner may still take it.
UNSUPPORTED_ORDER: Final = "unsupported_order"

# --- Translation tables: our vocabulary ↔ the partner's -------------------------------------

# Our drug code systems → the partner's `product.code_type`.
PRODUCT_CODE_TYPES: Final[Mapping[str, str]] = {RXNORM_SYSTEM: "RXNORM", NDC_SYSTEM: "NDC"}

# FHIR administrative gender → the partner's `patient.sex`.
SEXES: Final[Mapping[str, str]] = {"female": "F", "male": "M", "other": "U", "unknown": "U"}

# The partner's order status → ours (OrderStatus.status). It reviews before filling: still
# only acknowledged to us.
ORDER_STATUSES: Final[Mapping[str, str]] = {
    "RECEIVED": "acknowledged",
    "IN_REVIEW": "acknowledged",
    "FILLED": "dispensed",
    "SHIPPED": "shipped",
    "DELIVERED": "delivered",
    "CANCELLED": "cancelled",
    "REJECTED": "rejected",
}

# The partner's refusals that mean "not this partner" → PartnerCannotFill.reason; routing
# moves on to another partner. Any other 4xx is GatewayRejected (our data, or a bug).
CANNOT_FILL_REASONS: Final[Mapping[str, str]] = {
    "OUT_OF_STOCK": "out_of_stock",
    "NOT_LICENSED_IN_STATE": "not_licensed",
    "PRODUCT_NOT_CARRIED": "cannot_dispense",
}

# A cancellation the partner refuses because the order is filled.
ALREADY_FILLED: Final = "ORDER_ALREADY_FILLED"
ORDER_NOT_FOUND: Final = "ORDER_NOT_FOUND"

# Kept of a refusal's details, bounded in size.
DETAILS_KEPT = 20
DETAIL_TEXT_LENGTH = 200


class Untranslatable(ValueError):
    """The bundle cannot be written in the partner's contract; the message names the FHIR
    element, never its value."""


# --- Bundle → order request ------------------------------------------------------------------


@dataclass(frozen=True)
class _Resources:
    header: Mapping[str, Any]
    requests: list[Mapping[str, Any]]
    patient: Mapping[str, Any]
    practitioner: Mapping[str, Any]


def order_request(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The partner's `POST /v2/orders` body for a Scriptline US prescription-order Bundle;
    raises Untranslatable."""
    resources = _resources(bundle)
    event = resources.header.get("eventCoding") or {}
    if event.get("system") != MESSAGE_EVENT_SYSTEM or event.get("code") != "prescription-order":
        raise Untranslatable("MessageHeader.eventCoding: not a Scriptline prescription-order message")
    body: dict[str, Any] = {
        "client_reference": _prescription_reference(resources.requests),
        "patient": _patient(resources.patient),
        "shipping_address": _shipping_address(resources.patient),
        "prescriber": _prescriber(resources.practitioner),
        "line_items": [_line_item(request, index) for index, request in enumerate(resources.requests)],
    }
    notes = [
        str(note["text"])
        for request in resources.requests[:1]
        for note in request.get("note") or []
        if isinstance(note, dict) and note.get("text")
    ]
    if notes:
        body["notes"] = " ".join(notes)
    return body


def _resources(bundle: Mapping[str, Any]) -> _Resources:
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "message":
        raise Untranslatable("Bundle: not a FHIR message Bundle")
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            by_type.setdefault(str(resource.get("resourceType")), []).append(resource)
    for resource_type in ("MessageHeader", "Patient", "Practitioner"):
        if len(by_type.get(resource_type, [])) != 1:
            raise Untranslatable(f"{resource_type}: the message must hold exactly one")
    if not by_type.get("MedicationRequest"):
        raise Untranslatable("MedicationRequest: the message holds none")
    return _Resources(
        header=by_type["MessageHeader"][0],
        requests=by_type["MedicationRequest"],
        patient=by_type["Patient"][0],
        practitioner=by_type["Practitioner"][0],
    )


def _prescription_reference(requests_: list[Mapping[str, Any]]) -> str:
    group = requests_[0].get("groupIdentifier") or {}
    if group.get("system") != PRESCRIPTION_SYSTEM or not group.get("value"):
        raise Untranslatable("MedicationRequest.groupIdentifier: no Scriptline prescription identifier")
    return str(group["value"])


def _official_name(resource: Mapping[str, Any], element: str) -> tuple[str, str]:
    names = [name for name in resource.get("name") or [] if isinstance(name, dict)]
    name = next((name for name in names if name.get("use") == "official"), names[0] if names else {})
    family = name.get("family")
    if not family:
        raise Untranslatable(f"{element}.name.family: missing")
    return " ".join(name.get("given") or []), str(family)


def _patient(patient: Mapping[str, Any]) -> dict[str, Any]:
    first_name, last_name = _official_name(patient, "Patient")
    sex = SEXES.get(str(patient.get("gender") or "unknown"))
    if sex is None:
        raise Untranslatable("Patient.gender: not an administrative-gender code")
    if not patient.get("birthDate"):
        raise Untranslatable("Patient.birthDate: missing")
    result = {
        "first_name": first_name,
        "last_name": last_name,
        "date_of_birth": str(patient["birthDate"]),
        "sex": sex,
    }
    for contact in patient.get("telecom") or []:
        if isinstance(contact, dict) and contact.get("system") in {"phone", "email"} and contact.get("value"):
            result.setdefault(str(contact["system"]), str(contact["value"]))
    return result


# The partner ships to US ZIP codes only; anything else it would refuse as our bad data.
ZIP_CODE: Final = re.compile(r"\d{5}(-\d{4})?")


def _shipping_address(patient: Mapping[str, Any]) -> dict[str, Any]:
    addresses = [address for address in patient.get("address") or [] if isinstance(address, dict)]
    if not addresses:
        raise Untranslatable("Patient.address: missing; a mail-order pharmacy ships to it")
    address = addresses[0]
    if address.get("country", "US") != "US":
        raise Untranslatable("Patient.address.country: not US")
    lines = [str(line) for line in address.get("line") or [] if line]
    for element, value in (
        ("line", lines),
        ("city", address.get("city")),
        ("state", address.get("state")),
        ("postalCode", address.get("postalCode")),
    ):
        if not value:
            raise Untranslatable(f"Patient.address.{element}: missing")
    if not ZIP_CODE.fullmatch(str(address["postalCode"]).strip()):
        raise Untranslatable("Patient.address.postalCode: not a ZIP or ZIP+4")
    result = {
        "line1": lines[0],
        "city": str(address["city"]),
        "state": str(address["state"]),
        "postal_code": str(address["postalCode"]).strip(),
        "country": "US",
    }
    if len(lines) > 1:
        result["line2"] = ", ".join(lines[1:])
    return result


def _prescriber(practitioner: Mapping[str, Any]) -> dict[str, Any]:
    first_name, last_name = _official_name(practitioner, "Practitioner")
    identifiers = {
        str(identifier.get("system")): str(identifier.get("value"))
        for identifier in practitioner.get("identifier") or []
        if isinstance(identifier, dict) and identifier.get("value")
    }
    if NPI_SYSTEM not in identifiers:
        raise Untranslatable("Practitioner.identifier: no NPI; the partner identifies prescribers by it")
    result = {"npi": identifiers[NPI_SYSTEM], "first_name": first_name, "last_name": last_name}
    if DEA_SYSTEM in identifiers:
        result["dea"] = identifiers[DEA_SYSTEM]
    return result


def _line_item(request: Mapping[str, Any], index: int) -> dict[str, Any]:
    element = f"MedicationRequest[{index}]"
    codings = [
        coding
        for coding in (request.get("medicationCodeableConcept") or {}).get("coding") or []
        if isinstance(coding, dict) and coding.get("system") in PRODUCT_CODE_TYPES and coding.get("code")
    ]
    if not codings:
        raise Untranslatable(f"{element}.medicationCodeableConcept: no RxNorm or NDC code")
    coding = codings[0]
    dispense = request.get("dispenseRequest") or {}
    quantity = (dispense.get("quantity") or {}).get("value")
    duration = dispense.get("expectedSupplyDuration") or {}
    if duration.get("code") != "d" or not isinstance(duration.get("value"), int | float | str):
        raise Untranslatable(f"{element}.dispenseRequest.expectedSupplyDuration: not in days")
    sig = " ".join(
        str(dosage["text"])
        for dosage in request.get("dosageInstruction") or []
        if isinstance(dosage, dict) and dosage.get("text")
    )
    if not sig:
        raise Untranslatable(f"{element}.dosageInstruction.text: missing")
    item: dict[str, Any] = {
        "product": {"code_type": PRODUCT_CODE_TYPES[coding["system"]], "code": str(coding["code"])},
        "quantity": _number(quantity, f"{element}.dispenseRequest.quantity.value"),
        "sig": sig,
        "days_supply": int(_number(duration["value"], f"{element}.dispenseRequest.expectedSupplyDuration")),
    }
    if coding.get("display"):
        item["description"] = str(coding["display"])
    unit = (dispense.get("quantity") or {}).get("unit")
    if unit:
        item["quantity_unit"] = str(unit)
    line_ids = [
        str(identifier["value"])
        for identifier in request.get("identifier") or []
        if isinstance(identifier, dict)
        and identifier.get("system") == PRESCRIPTION_ITEM_SYSTEM
        and identifier.get("value")
    ]
    if line_ids:
        item["client_line_id"] = line_ids[0]
    return item


def _number(value: Any, element: str) -> int | float:
    """A FHIR decimal (a JSON number, or a string once dumped) as the JSON number it is."""
    try:
        number = Decimal(str(value))
    except InvalidOperation as error:
        raise Untranslatable(f"{element}: not a number") from error
    if not number.is_finite() or number <= 0:
        raise Untranslatable(f"{element}: must be positive")
    return int(number) if number == number.to_integral_value() else float(number)


# --- The partner's answers → the gateway port -------------------------------------------------


@dataclass(frozen=True)
class _Refusal:
    code: str
    details: list[dict[str, str]]

    def describe(self) -> str:
        fields = ", ".join(detail["field"] for detail in self.details if detail.get("field"))
        return f"{self.code} ({fields})" if fields else self.code

    def outcome(self) -> dict[str, Any]:
        """The refusal as an OperationOutcome, for the dead letter (our format, not theirs)."""
        issues = [
            {
                "severity": "error",
                "code": "processing",
                "diagnostics": " ".join(
                    part for part in (self.code, detail.get("field"), detail.get("issue")) if part
                ),
                "details": [self.code],
            }
            for detail in self.details or [{}]
        ]
        return {"resourceType": "OperationOutcome", "issue": issues}


def _refusal(response: requests.Response) -> _Refusal:
    """The partner's `{"error": {"code", "details"}}`; its free-text message is not kept."""
    try:
        error = response.json().get("error") or {}
        code = str(error.get("code") or f"HTTP_{response.status_code}")[:DETAIL_TEXT_LENGTH]
        details = [
            {key: str(detail[key])[:DETAIL_TEXT_LENGTH] for key in ("field", "issue") if detail.get(key)}
            for detail in (error.get("details") or [])[:DETAILS_KEPT]
            if isinstance(detail, dict)
        ]
    except (ValueError, AttributeError, TypeError):
        return _Refusal(code=f"HTTP_{response.status_code}", details=[])
    return _Refusal(code=code, details=details)


def _is_transient(response: requests.Response) -> bool:
    return response.status_code >= 500 or response.status_code == 429


class MailOrderGateway:
    """The gateway port over the mail-order pharmacy's JSON API (`/v2`)."""

    def __init__(self, *, base_url: str, api_key: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def order_submit(self, *, bundle: dict[str, Any], idempotency_key: str) -> OrderAcknowledgement:
        try:
            body = order_request(bundle)
        except Untranslatable as error:
            raise PartnerCannotFill(
                f"mail-order pharmacy cannot take this order: {error}", reason=UNSUPPORTED_ORDER
            ) from error
        response = self._call(
            "POST",
            "/v2/orders",
            data=json.dumps(body, separators=(",", ":")),
            headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key},
        )
        if response.status_code >= 400:
            refusal = _refusal(response)
            message = f"mail-order pharmacy refused the order: {response.status_code} {refusal.describe()}"
            reason = CANNOT_FILL_REASONS.get(refusal.code)
            if reason is not None:
                raise PartnerCannotFill(message, reason=reason, outcome=refusal.outcome())
            raise GatewayRejected(message, outcome=refusal.outcome())
        order = self._json(response)
        if not isinstance(order.get("id"), str) or not order["id"]:
            raise GatewayUnavailable("mail-order pharmacy answered an order without an id")
        return OrderAcknowledgement(
            order_id=order["id"], replayed=response.headers.get("Idempotent-Replayed") == "true"
        )

    def order_cancel(self, *, order_id: str, idempotency_key: str) -> None:
        """Cancel an order not yet filled; cancelling twice is harmless (200 both times)."""
        response = self._call(
            "POST",
            f"/v2/orders/{quote(order_id, safe='')}/cancel",
            headers={"Idempotency-Key": idempotency_key},
        )
        if response.status_code >= 400:
            refusal = _refusal(response)
            message = (
                f"mail-order pharmacy refused the cancellation: {response.status_code} {refusal.describe()}"
            )
            if refusal.code == ALREADY_FILLED:
                raise OrderAlreadyDispensed(message)
            if refusal.code == ORDER_NOT_FOUND:
                raise OrderUnknown(message)
            raise GatewayRejected(message)

    def order_status(self, *, order_id: str) -> OrderStatus:
        """`GET /v2/orders/{id}`: where the order is now, in our vocabulary."""
        response = self._call("GET", f"/v2/orders/{quote(order_id, safe='')}")
        if response.status_code >= 400:
            refusal = _refusal(response)
            if refusal.code == ORDER_NOT_FOUND or response.status_code == 404:
                raise OrderUnknown(f"mail-order pharmacy has no order {order_id[:80]}")
            raise GatewayRejected(
                f"mail-order pharmacy refused the status request: {response.status_code} {refusal.describe()}"
            )
        order = self._json(response)
        status = ORDER_STATUSES.get(str(order.get("status")))
        if status is None:
            raise GatewayUnavailable(
                f"mail-order pharmacy answered a status we do not know: {str(order.get('status'))[:40]}"
            )
        shipment = order.get("shipment")
        if not isinstance(shipment, dict):
            shipment = {}
        return OrderStatus(status=status, tracking_number=str(shipment.get("tracking_number") or ""))

    def _call(self, method: str, path: str, **options: Any) -> requests.Response:
        """One request with the API key; transient failures (no answer, 5xx, 429) raise
        GatewayUnavailable, any other answer is returned."""
        headers = {API_KEY_HEADER: self.api_key, "Accept": "application/json", **options.pop("headers", {})}
        try:
            response = requests.request(
                method, f"{self.base_url}{path}", headers=headers, timeout=self.timeout, **options
            )
        except (requests.ConnectionError, requests.Timeout) as error:
            raise GatewayUnavailable(f"mail-order pharmacy unreachable: {type(error).__name__}") from error
        if _is_transient(response):
            raise GatewayUnavailable(f"mail-order pharmacy answered {response.status_code}")
        return response

    @staticmethod
    def _json(response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as error:
            raise GatewayUnavailable("mail-order pharmacy answered something that is not JSON") from error
        if not isinstance(body, dict):
            raise GatewayUnavailable("mail-order pharmacy answered something that is not a JSON object")
        return body
