"""The pharmacy gateway port: what dispatch needs from the pharmacy, and its errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class GatewayError(Exception):
    """Base class for gateway failures."""


class GatewayUnavailable(GatewayError):
    """Transient: 5xx, timeout, connection refused. Retry with backoff."""


class GatewayRejected(GatewayError):
    """Terminal: the gateway refused the order (4xx). Retrying cannot help."""


class OrderAlreadyDispensed(GatewayRejected):
    """Terminal: the gateway refused a cancellation because the order is dispensed (409)."""


@dataclass(frozen=True)
class OrderAcknowledgement:
    order_id: str
    replayed: bool


class Gateway(Protocol):
    def order_submit(self, *, bundle: dict[str, Any], idempotency_key: str) -> OrderAcknowledgement: ...

    def order_cancel(self, *, order_id: str, idempotency_key: str) -> None: ...
