"""The payment port: what billing needs from a card processor, and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class PaymentError(Exception):
    """Base class for payment-provider failures."""


class PaymentUnavailable(PaymentError):
    """Transient: connection error, timeout, 5xx, rate limit. Retry with backoff."""


class PaymentRejected(PaymentError):
    """Terminal: the provider refused the request (4xx). Retrying cannot help."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class CardDeclined(PaymentRejected):
    """The card was declined; the customer may try another."""


class WebhookInvalid(PaymentError):
    """A webhook whose signature, timestamp or body is not acceptable."""


@dataclass(frozen=True)
class Intent:
    id: str
    status: str
    amount: int
    currency: str
    client_secret: str
    metadata: dict[str, str] = field(default_factory=dict)
    decline_code: str = ""


@dataclass(frozen=True)
class RefundResult:
    id: str
    status: str | None
    amount: int


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    type: str
    data_object: dict[str, Any]
