"""The Stripe simulator through the real stripe SDK (our adapter), as a separate process."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
import stripe

from billing.adapters import stripe as stripe_api
from billing.payments import CardDeclined, PaymentRejected, PaymentUnavailable, WebhookInvalid
from common.signing import signature_header
from sandbox.stripe import parse_form

SECRET = "whsec_scriptline_simulator"


def create(key: str = "key-1", amount: int = 1234, **metadata: str):  # type: ignore[no-untyped-def]
    return stripe_api.payment_intent_create(
        amount_minor=amount, currency="GBP", metadata={"payment_id": "7", **metadata}, idempotency_key=key
    )


def test_the_same_key_and_parameters_return_the_same_payment_intent(stripe_sim):  # type: ignore[no-untyped-def]
    first = create()
    second = create()

    assert second == first
    assert first.status == "requires_payment_method"
    assert first.amount == 1234
    assert first.currency == "gbp"
    assert first.client_secret.startswith(f"{first.id}_secret_")
    stats = stripe_sim.stats()
    assert stats["payment_intents"] == 1
    assert stats["idempotent_replays"] == 1
    assert stats["intents_by_key"] == {"key-1": first.id}


def test_the_same_key_with_other_parameters_is_an_idempotency_error(stripe_sim):  # type: ignore[no-untyped-def]
    create(amount=1234)

    with pytest.raises(PaymentRejected, match="same parameters"):
        create(amount=999)

    assert stripe_sim.stats()["payment_intents"] == 1
    assert stripe_sim.stats()["idempotency_conflicts"] == 1


def test_a_visa_test_card_succeeds_and_a_declining_card_is_declined(stripe_sim):  # type: ignore[no-untyped-def]
    paid = create(key="a")
    declined = create(key="b")

    succeeded = stripe_api.payment_intent_confirm(
        intent_id=paid.id, payment_method="pm_card_visa", idempotency_key="confirm-a"
    )
    with pytest.raises(CardDeclined) as decline:
        stripe_api.payment_intent_confirm(
            intent_id=declined.id, payment_method="pm_card_chargeDeclined", idempotency_key="confirm-b"
        )

    assert succeeded.status == "succeeded"
    assert decline.value.code == "generic_decline"
    after = stripe_api.payment_intent_retrieve(intent_id=declined.id)
    assert after.status == "requires_payment_method"
    assert after.decline_code == "generic_decline"
    assert [event["type"] for event in stripe_sim.events()] == [
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
    ]


def test_a_refund_repeated_with_its_key_is_made_once_and_a_second_refund_is_refused(stripe_sim):  # type: ignore[no-untyped-def]
    intent = create()
    stripe_api.payment_intent_confirm(intent_id=intent.id, payment_method="pm_card_visa", idempotency_key="c")

    first = stripe_api.refund_create(intent_id=intent.id, amount_minor=1234, metadata={}, idempotency_key="r")
    again = stripe_api.refund_create(intent_id=intent.id, amount_minor=1234, metadata={}, idempotency_key="r")
    with pytest.raises(PaymentRejected, match="already been refunded"):
        stripe_api.refund_create(intent_id=intent.id, amount_minor=1234, metadata={}, idempotency_key="other")

    assert again == first
    assert first.status == "succeeded"
    assert stripe_sim.stats()["refunds_by_intent"] == {intent.id: [first.id]}


def test_an_unpaid_intent_cannot_be_refunded_and_a_paid_one_cannot_be_cancelled(stripe_sim):  # type: ignore[no-untyped-def]
    unpaid = create(key="u")
    paid = create(key="p")
    stripe_api.payment_intent_confirm(intent_id=paid.id, payment_method="pm_card_visa", idempotency_key="c")

    with pytest.raises(PaymentRejected, match="does not have a successful charge"):
        stripe_api.refund_create(intent_id=unpaid.id, amount_minor=1, metadata={}, idempotency_key="r")
    with pytest.raises(PaymentRejected, match="status of succeeded"):
        stripe_api.payment_intent_cancel(intent_id=paid.id, idempotency_key="x")
    cancelled = stripe_api.payment_intent_cancel(intent_id=unpaid.id, idempotency_key="y")

    assert cancelled.status == "canceled"
    assert stripe_sim.stats()["refunds"] == 0


def test_an_unknown_payment_intent_is_a_404_resource_missing(stripe_sim):  # type: ignore[no-untyped-def]
    with pytest.raises(PaymentRejected, match="404 No such payment_intent: 'pi_missing'"):
        stripe_api.payment_intent_retrieve(intent_id="pi_missing")


def test_an_outage_is_transient_and_not_saved_under_the_idempotency_key(stripe_sim):  # type: ignore[no-untyped-def]
    stripe_sim.control(down=True)
    with pytest.raises(PaymentUnavailable):
        create()
    stripe_sim.control(down=False)

    intent = create()

    assert intent.status == "requires_payment_method"
    assert stripe_sim.stats()["payment_intents"] == 1


def test_a_wrong_api_key_is_refused(stripe_sim, settings):  # type: ignore[no-untyped-def]
    settings.STRIPE_SECRET_KEY = "sk_test_wrong"

    with pytest.raises(PaymentRejected, match="401"):
        create()

    assert stripe_sim.stats()["payment_intents"] == 0


def test_one_client_serves_every_call_until_the_configuration_changes(stripe_sim, settings):  # type: ignore[no-untyped-def]
    first = stripe_api._client()
    create(key="reuse-1")
    create(key="reuse-2")
    assert stripe_api._client() is first

    settings.STRIPE_SECRET_KEY = "sk_test_wrong"
    assert stripe_api._client() is not first
    with pytest.raises(PaymentRejected, match="401"):
        create(key="reuse-3")


def test_the_events_it_sends_verify_with_the_sdk_and_tampering_does_not(stripe_sim):  # type: ignore[no-untyped-def]
    intent = create()
    stripe_api.payment_intent_confirm(intent_id=intent.id, payment_method="pm_card_visa", idempotency_key="c")
    body = stripe_sim.events()[0]["body"].encode()
    now = int(time.time())

    event = stripe.Webhook.construct_event(
        body, signature_header(secrets=[SECRET], body=body, timestamp=now), SECRET
    )

    assert event["type"] == "payment_intent.succeeded"
    assert event["data"]["object"]["id"] == intent.id
    with pytest.raises(WebhookInvalid):
        stripe_api.webhook_event_construct(
            payload=body.replace(b"succeeded", b"xucceeded"),
            signature_header=signature_header(secrets=[SECRET], body=body, timestamp=now),
        )
    with pytest.raises(WebhookInvalid):
        stripe_api.webhook_event_construct(
            payload=body, signature_header=signature_header(secrets=[SECRET], body=body, timestamp=now - 3600)
        )


def test_auto_confirm_pays_a_new_intent_after_the_delay(stripe_sim):  # type: ignore[no-untyped-def]
    stripe_sim.control(auto_confirm=True, auto_confirm_delay=0.1)
    intent = create()

    deadline = time.monotonic() + 5
    while stripe_api.payment_intent_retrieve(intent_id=intent.id).status != "succeeded":
        assert time.monotonic() < deadline, "auto-confirm did not happen"
        time.sleep(0.05)

    assert [event["type"] for event in stripe_sim.events()] == ["payment_intent.succeeded"]


def test_drop_next_webhook_drops_exactly_one(stripe_sim):  # type: ignore[no-untyped-def]
    stripe_sim.control(drop_next_webhooks=1)
    for key in ("a", "b"):
        intent = create(key=key)
        stripe_api.payment_intent_confirm(
            intent_id=intent.id, payment_method="pm_card_visa", idempotency_key=f"confirm-{key}"
        )

    assert [event["dropped"] for event in stripe_sim.events()] == [True, False]
    assert stripe_sim.stats()["webhooks_dropped"] == 1
    assert stripe_sim.control()["drop_next_webhooks"] == 0


def test_a_bad_knob_is_refused_and_changes_nothing(stripe_sim):  # type: ignore[no-untyped-def]
    request = urllib.request.Request(
        f"{stripe_sim.url}/_control",
        data=json.dumps({"auto_confirm": True, "drop_next_webhooks": -1}).encode(),
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)

    assert refused.value.code == 400
    assert stripe_sim.control()["auto_confirm"] is False


def test_form_parameters_nest_like_stripes():
    params = parse_form(b"amount=10&metadata[a]=1&metadata[b]=2&automatic_payment_methods[enabled]=true")

    assert params == {
        "amount": "10",
        "metadata": {"a": "1", "b": "2"},
        "automatic_payment_methods": {"enabled": "true"},
    }
