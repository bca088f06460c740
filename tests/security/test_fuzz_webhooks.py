"""Schemathesis generates partner webhook bodies (the pharmacy gateway's, Stripe's and a pharmacy
partner's stock feed) from a schema of their events; each body is signed with the right secret, so it gets past the
signature check into parsing and applying, and posted to the real view: never a 5xx.
Bounded for CI (FUZZ_EXAMPLES, default 100 a webhook)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.test import Client
from hypothesis import HealthCheck, settings
from schemathesis.core import NOT_SET

from billing.models import Payment
from common.signing import signature_header
from pharmacy.models import Dispatch, Partner
from prescriptions.models import Status
from tests.pharmacy.factories import force_status
from tests.prescriptions.factories import scenario

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
ORDER_ID = "ord-fuzz-1"
INTENT_ID = "pi_fuzz_1"

_TEXT = {"type": "string", "maxLength": 120}
_GATEWAY_EVENT = {
    "type": "object",
    "required": ["id", "type", "data"],
    "properties": {
        "id": _TEXT,
        "type": {
            "enum": [
                "order.acknowledged",
                "order.dispensed",
                "order.shipped",
                "order.delivered",
                "order.rejected",
            ]
        },
        "created": {"type": "integer"},
        "data": {
            "type": "object",
            "properties": {
                "order_id": {"anyOf": [{"enum": [ORDER_ID]}, _TEXT]},
                "idempotency_key": _TEXT,
                "tracking_number": _TEXT,
                "reason": _TEXT,
                "status": _TEXT,
            },
        },
    },
}
_STRIPE_EVENT = {
    "type": "object",
    "required": ["id", "object", "type", "data"],
    "properties": {
        "id": _TEXT,
        "object": {"enum": ["event"]},
        "type": {
            "enum": [
                "payment_intent.succeeded",
                "payment_intent.payment_failed",
                "payment_intent.canceled",
                "charge.refunded",
            ]
        },
        "created": {"type": "integer"},
        "data": {
            "type": "object",
            "required": ["object"],
            "properties": {
                "object": {
                    "type": "object",
                    "properties": {
                        "id": {"anyOf": [{"enum": [INTENT_ID]}, _TEXT]},
                        "object": {"enum": ["payment_intent", "charge"]},
                        "amount": {"type": "integer"},
                        "currency": _TEXT,
                        "status": _TEXT,
                        "metadata": {"type": "object", "additionalProperties": _TEXT},
                        "last_payment_error": {"type": "object", "properties": {"message": _TEXT}},
                    },
                }
            },
        },
    },
}


STOCK_PARTNER = "fuzz-east"
STOCK_PATH = f"/webhooks/partners/{STOCK_PARTNER}/stock/"
_STOCK_FEED = {
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": _TEXT,
        "items": {
            "type": "array",
            "maxItems": 20,
            "items": {
                "type": "object",
                "properties": {
                    "product_code": {"anyOf": [{"enum": ["fuzz-product"]}, _TEXT]},
                    "quantity": {
                        "anyOf": [{"type": "integer"}, {"type": "number"}, _TEXT, {"type": "boolean"}]
                    },
                },
            },
        },
    },
}


def _operation(event_schema: dict[str, Any], summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": event_schema}}},
            "responses": {"200": {"description": "applied, ignored or duplicate"}},
        }
    }


schema = schemathesis.openapi.from_dict(
    {
        "openapi": "3.0.3",
        "info": {"title": "Scriptline partner webhooks", "version": "1"},
        "paths": {
            "/webhooks/gateway/": _operation(_GATEWAY_EVENT, "Pharmacy gateway events"),
            "/webhooks/stripe/": _operation(_STRIPE_EVENT, "Stripe PaymentIntent events"),
            STOCK_PATH: _operation(_STOCK_FEED, "A pharmacy partner's stock levels"),
        },
    }
)
STOCK_SECRET = "fuzz-east-stock-secret"
SECRETS = {"/webhooks/gateway/": "GATEWAY_WEBHOOK_SECRET", "/webhooks/stripe/": "STRIPE_WEBHOOK_SECRET"}
SIGNATURE_HEADERS = {
    "/webhooks/gateway/": "HTTP_GATEWAY_SIGNATURE",
    "/webhooks/stripe/": "HTTP_STRIPE_SIGNATURE",
    STOCK_PATH: "HTTP_PARTNER_SIGNATURE",
}


@pytest.fixture
def known_order_and_payment(db, formulary, settings):  # type: ignore[no-untyped-def]
    """An acknowledged order, a payment and a stock partner the generated events can name, so
    some of them reach the code that applies an event, not only the lookups that miss."""
    settings.PARTNER_SECRETS = {
        STOCK_PARTNER: {"url": "http://127.0.0.1:9", "api_key": "fuzz-key", "webhook_secret": STOCK_SECRET}
    }
    Partner.objects.get_or_create(
        code=STOCK_PARTNER, defaults={"name": "Fuzz East", "countries": ["US"], "us_states": ["NY"]}
    )
    prescription = scenario()
    force_status(prescription, Status.ACKNOWLEDGED)
    Dispatch.objects.create(
        prescription=prescription, status=Dispatch.Status.ACKNOWLEDGED, gateway_order_id=ORDER_ID
    )
    paid = scenario()
    Payment.objects.create(
        prescription=paid,
        clinic=paid.clinic,
        amount_minor=990,
        currency="gbp",
        idempotency_key="fuzz-payment",
        stripe_payment_intent_id=INTENT_ID,
        status=Payment.Status.REQUIRES_PAYMENT,
    )


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_partner_webhooks_answer_every_signed_generated_event_without_5xx(case, known_order_and_payment):
    # Negative cases may have no body at all, or raw bytes.
    body = (
        case.body
        if isinstance(case.body, bytes)
        else b""
        if case.body is NOT_SET
        else json.dumps(case.body).encode()
    )
    secret = STOCK_SECRET if case.path == STOCK_PATH else getattr(django_settings, SECRETS[case.path])
    response = Client().post(
        case.path,
        body,
        content_type="application/json",
        **{SIGNATURE_HEADERS[case.path]: signature_header(secrets=[secret], body=body)},
    )

    assert response.status_code < 500, response.content[:300]
