"""The pharmacy gateway port: what dispatch needs from the pharmacy, and its errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class GatewayError(Exception):
    """Base class for gateway failures."""


class GatewayUnavailable(GatewayError):
    """Transient: 5xx, timeout, connection refused. Retry with backoff."""


class GatewayRejected(GatewayError):
    """Terminal: the gateway refused the order (4xx). Retrying cannot help.

    `outcome` is the FHIR OperationOutcome the gateway answered with, when it sent one (for
    example the EPS rules a message broke), for the dead-letter record.
    """

    def __init__(self, message: str, *, outcome: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


class PartnerCannotFill(GatewayRejected):
    """Terminal for this partner only: it cannot fill the order (`reason`: "out_of_stock",
    "cannot_dispense", "not_licensed", ...). Another eligible partner may; routing moves on."""

    def __init__(self, message: str, *, reason: str, outcome: dict[str, Any] | None = None) -> None:
        super().__init__(message, outcome=outcome)
        self.reason = reason


class OrderAlreadyDispensed(GatewayRejected):
    """Terminal: the gateway refused a cancellation because the order is dispensed (409)."""


@dataclass(frozen=True)
class OrderAcknowledgement:
    order_id: str
    replayed: bool


class OrderUnknown(GatewayRejected):
    """Terminal: the gateway has no such order (404 to a status request)."""


@dataclass(frozen=True)
class OrderStatus:
    """Where the gateway says an order is: acknowledged, dispensed, shipped, delivered,
    cancelled or rejected; the tracking number once shipped."""

    status: str
    tracking_number: str


class Gateway(Protocol):
    def order_submit(self, *, bundle: dict[str, Any], idempotency_key: str) -> OrderAcknowledgement: ...

    def order_cancel(self, *, order_id: str, idempotency_key: str) -> None: ...

    def order_status(self, *, order_id: str) -> OrderStatus: ...
