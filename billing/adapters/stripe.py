"""The Stripe adapter: the only module that imports the stripe SDK.

One small typed function per call. Every write passes our own idempotency key, so a retried
task repeats the same request rather than making a new one. The client points at
settings.STRIPE_API_BASE (the local simulator unless configured) with a timeout, and does
no retries of its own: Celery retries transient failures with backoff.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import stripe
from django.conf import settings

from billing.models import StripeEvent
from billing.payments import (
    CardDeclined,
    Intent,
    PaymentRejected,
    PaymentUnavailable,
    RefundResult,
    WebhookEvent,
    WebhookInvalid,
)
from common.jsonsafe import json_loads_bounded

if TYPE_CHECKING:
    from stripe.params import (
        PaymentIntentCancelParams,
        PaymentIntentConfirmParams,
        PaymentIntentCreateParams,
        RefundCreateParams,
    )

T = TypeVar("T")
# What StripeEvent stores: a longer id or type is not Stripe's and is refused, not truncated.
EVENT_ID_LENGTH = StripeEvent._meta.get_field("event_id").max_length or 80
EVENT_TYPE_LENGTH = StripeEvent._meta.get_field("type").max_length or 60


def _client() -> stripe.StripeClient:
    """One client per process and configuration, as the SDK recommends: its HTTP session (one
    per thread) keeps the connection to Stripe open between calls, so a payment does not pay
    for a new TLS handshake. Keyed by the process too: a forked worker opens its own."""
    return _client_for(
        os.getpid(), settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE, settings.STRIPE_TIMEOUT_SECONDS
    )


@functools.lru_cache(maxsize=4)
def _client_for(_pid: int, secret_key: str, api_base: str, timeout: float) -> stripe.StripeClient:
    return stripe.StripeClient(
        secret_key,
        base_addresses={"api": api_base},
        http_client=stripe.RequestsClient(timeout=timeout),
        max_network_retries=0,
    )


def _call(function: Callable[[], T]) -> T:
    """Run one SDK call, translating its errors into the payment port's."""
    try:
        return function()
    except stripe.CardError as error:
        raise CardDeclined(
            error.user_message or "card declined", code=_decline_code(error.json_body)
        ) from error
    except (stripe.APIConnectionError, stripe.RateLimitError) as error:
        raise PaymentUnavailable(f"stripe unreachable: {type(error).__name__}") from error
    except stripe.StripeError as error:
        status = error.http_status or 0
        if status >= 500 or status in (409, 429):
            raise PaymentUnavailable(f"stripe answered {status}") from error
        raise PaymentRejected(
            f"stripe refused: {status} {error.user_message or ''}"[:300], code=error.code or ""
        ) from error


def _decline_code(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("decline_code") or body["error"].get("code") or "")
    return ""


def _intent(resource: Any) -> Intent:
    obj = resource.to_dict()
    last_error = obj.get("last_payment_error") or {}
    return Intent(
        id=obj["id"],
        status=obj["status"],
        amount=int(obj["amount"]),
        currency=str(obj["currency"]),
        client_secret=str(obj.get("client_secret") or ""),
        metadata={str(key): str(value) for key, value in (obj.get("metadata") or {}).items()},
        decline_code=str(last_error.get("decline_code") or last_error.get("code") or ""),
    )


def payment_intent_create(
    *, amount_minor: int, currency: str, metadata: dict[str, str], idempotency_key: str
) -> Intent:
    params: PaymentIntentCreateParams = {
        "amount": amount_minor,
        "currency": currency.lower(),
        "metadata": metadata,
        "automatic_payment_methods": {"enabled": True},
    }
    return _intent(
        _call(lambda: _client().v1.payment_intents.create(params, {"idempotency_key": idempotency_key}))
    )


def payment_intent_retrieve(*, intent_id: str) -> Intent:
    return _intent(_call(lambda: _client().v1.payment_intents.retrieve(intent_id)))


def payment_intent_confirm(*, intent_id: str, payment_method: str, idempotency_key: str) -> Intent:
    params: PaymentIntentConfirmParams = {"payment_method": payment_method}
    return _intent(
        _call(
            lambda: _client().v1.payment_intents.confirm(
                intent_id, params, {"idempotency_key": idempotency_key}
            )
        )
    )


def payment_intent_cancel(*, intent_id: str, idempotency_key: str) -> Intent:
    params: PaymentIntentCancelParams = {"cancellation_reason": "abandoned"}
    return _intent(
        _call(
            lambda: _client().v1.payment_intents.cancel(
                intent_id, params, {"idempotency_key": idempotency_key}
            )
        )
    )


def refund_create(
    *, intent_id: str, amount_minor: int, metadata: dict[str, str], idempotency_key: str
) -> RefundResult:
    params: RefundCreateParams = {
        "payment_intent": intent_id,
        "amount": amount_minor,
        "reason": "requested_by_customer",
        "metadata": metadata,
    }
    refund = _call(lambda: _client().v1.refunds.create(params, {"idempotency_key": idempotency_key}))
    return RefundResult(id=refund.id, status=refund.status, amount=int(refund.amount))


def webhook_event_construct(*, payload: bytes, signature_header: str) -> WebhookEvent:
    """Verify the Stripe-Signature header with the SDK (WebhookSignature.verify_header, what
    Webhook.construct_event runs first) and read the event from the body as parsed here, once,
    without the SDK building its objects from it again."""
    try:
        # Deep nesting, NUL and NaN are refused here, before the signature is checked.
        parsed = json_loads_bounded(payload)
    except ValueError as error:
        raise WebhookInvalid("body is not a Stripe event") from error
    if not isinstance(parsed, dict):
        raise WebhookInvalid("body is not a Stripe event")
    try:
        stripe.WebhookSignature.verify_header(
            payload,
            signature_header,
            settings.STRIPE_WEBHOOK_SECRET,
            tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS,
        )
    except stripe.SignatureVerificationError as error:
        raise WebhookInvalid("bad or stale Stripe-Signature") from error
    except (ValueError, UnicodeDecodeError, TypeError, KeyError) as error:
        raise WebhookInvalid("body is not a Stripe event") from error
    data = parsed.get("data")
    data_object = data.get("object") if isinstance(data, dict) else None
    if not isinstance(data_object, dict) or "id" not in parsed or "type" not in parsed:
        raise WebhookInvalid("event has no data.object")
    webhook_event = WebhookEvent(id=str(parsed["id"]), type=str(parsed["type"]), data_object=data_object)
    if not 0 < len(webhook_event.id) <= EVENT_ID_LENGTH or len(webhook_event.type) > EVENT_TYPE_LENGTH:
        raise WebhookInvalid("event id or type is too long")
    return webhook_event
