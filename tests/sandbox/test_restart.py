"""Simulator processes killed (SIGKILL, no goodbye) and started again on the same state file
behave like a partner that went down and came back, not like one that forgot everything."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from django.conf import settings

from common.signing import signature_verify
from tests.processes import Simulator, StripeSimulator, start_simulator, start_stripe_simulator
from tests.sandbox.wire import Response, WebhookReceiver, message_bundle, request


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def gateway_headers(key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {settings.GATEWAY_API_KEY}", "Content-Type": "application/fhir+json"}
    return {**headers, "Idempotency-Key": key} if key else headers


def post_order(gateway: Simulator, key: str) -> Response:
    return request("POST", f"{gateway.url}/orders", message_bundle(), gateway_headers(key))


def event_types(receiver: WebhookReceiver) -> list[str]:
    return [json.loads(body)["type"] for _, body in receiver.deliveries]


def kill_with_the_dispensed_webhook_pending(gateway: Simulator, receiver: WebhookReceiver) -> dict[str, Any]:
    """Take an order, let the receiver refuse its first webhook, and SIGKILL the simulator
    while that webhook waits for its retry; the receiver accepts webhooks again afterwards."""
    receiver.failing = True
    order = post_order(gateway, "order-1").body
    receiver.wait_for(1, timeout=20)
    wait_until(lambda: gateway.stats()["pending_webhooks"] == 1)
    gateway.kill()
    receiver.failing = False
    return order


def test_a_killed_gateway_redelivers_its_pending_webhook_after_restart_and_walks_the_order_on(
    webhook_receiver: WebhookReceiver,
) -> None:
    gateway = start_simulator(webhook_url=webhook_receiver.url, step_delay=0.2)
    try:
        order = kill_with_the_dispensed_webhook_pending(gateway, webhook_receiver)
        refused = webhook_receiver.deliveries[0][1]

        gateway.restart()

        wait_until(lambda: gateway.stats()["webhooks_sent"] == 3 and gateway.stats()["advancing"] == 0)
        replay = post_order(gateway, "order-1")
        status = request("GET", f"{gateway.url}/orders/{order['order_id']}", headers=gateway_headers())
        stats = gateway.stats()
    finally:
        gateway.stop()

    types = event_types(webhook_receiver)
    assert types[0] == "order.dispensed"
    assert set(types[:-2]) == {"order.dispensed"}
    assert types[-2:] == ["order.shipped", "order.delivered"]
    # The redelivery is the same event, byte for byte, freshly signed.
    redelivered_headers, redelivered = webhook_receiver.deliveries[-3]
    assert redelivered == refused
    assert signature_verify(
        header=redelivered_headers["Gateway-Signature"],
        secrets=[settings.GATEWAY_WEBHOOK_SECRET],
        body=redelivered,
        tolerance_seconds=300,
    )
    assert (replay.status, replay.body["order_id"]) == (200, order["order_id"])
    assert status.body["status"] == "delivered"
    assert (
        status.body["tracking_number"]
        == json.loads(webhook_receiver.deliveries[-1][1])["data"]["tracking_number"]
    )
    assert (stats["orders"], stats["webhooks_sent"], stats["pending_webhooks"]) == (1, 3, 0)
    assert stats["orders_by_key"] == {"order-1": order["order_id"]}


def test_a_gateway_restarted_with_drop_pending_webhooks_loses_them_but_the_order_moves_on(
    webhook_receiver: WebhookReceiver,
) -> None:
    gateway = start_simulator(webhook_url=webhook_receiver.url, step_delay=0.2)
    try:
        order = kill_with_the_dispensed_webhook_pending(gateway, webhook_receiver)
        refused_attempts = len(webhook_receiver.deliveries)

        gateway.restart("--drop-pending-webhooks")

        wait_until(lambda: gateway.stats()["webhooks_sent"] == 2 and gateway.stats()["advancing"] == 0)
        status = request("GET", f"{gateway.url}/orders/{order['order_id']}", headers=gateway_headers())
        stats = gateway.stats()
    finally:
        gateway.stop()

    types = event_types(webhook_receiver)
    assert set(types[:refused_attempts]) == {"order.dispensed"}
    assert types[refused_attempts:] == ["order.shipped", "order.delivered"]
    assert status.body["status"] == "delivered"
    assert (stats["webhooks_dropped"], stats["pending_webhooks"]) == (1, 0)


def stripe_call(stripe: StripeSimulator, method: str, path: str, key: str = "", **form: str) -> Response:
    headers = {"Authorization": f"Bearer {settings.STRIPE_SECRET_KEY}"}
    if key:
        headers["Idempotency-Key"] = key
    body = urllib.parse.urlencode(form).encode() if method == "POST" else None
    return request(method, f"{stripe.url}{path}", headers=headers, raw_body=body)


def test_a_killed_stripe_simulator_keeps_intents_idempotency_keys_and_pending_webhooks(
    webhook_receiver: WebhookReceiver,
) -> None:
    stripe = start_stripe_simulator(webhook_url=webhook_receiver.url)
    try:
        created = stripe_call(
            stripe, "POST", "/v1/payment_intents", "pay-1", amount="1234", currency="gbp"
        ).body
        webhook_receiver.failing = True
        confirmed = stripe_call(
            stripe,
            "POST",
            f"/v1/payment_intents/{created['id']}/confirm",
            "confirm-1",
            payment_method="pm_card_visa",
        ).body
        webhook_receiver.wait_for(1, timeout=20)
        refused = webhook_receiver.deliveries[0][1]
        stripe.kill()
        webhook_receiver.failing = False

        stripe.restart()

        wait_until(lambda: stripe.stats()["webhooks_sent"] == 1)
        replayed = stripe_call(stripe, "POST", "/v1/payment_intents", "pay-1", amount="1234", currency="gbp")
        conflict = stripe_call(stripe, "POST", "/v1/payment_intents", "pay-1", amount="999", currency="gbp")
        retrieved = stripe_call(stripe, "GET", f"/v1/payment_intents/{created['id']}").body
        stats = stripe.stats()
    finally:
        stripe.stop()

    assert webhook_receiver.deliveries[-1][1] == refused
    assert json.loads(refused)["type"] == "payment_intent.succeeded"
    assert (replayed.status, replayed.headers["Idempotent-Replayed"]) == (200, "true")
    assert replayed.body == created
    assert conflict.body["error"]["type"] == "idempotency_error"
    assert retrieved == confirmed
    assert retrieved["status"] == "succeeded"
    assert stats["intents_by_key"] == {"pay-1": created["id"]}
    assert (stats["payment_intents"], stats["pending_webhooks"], stats["idempotent_replays"]) == (1, 0, 1)
