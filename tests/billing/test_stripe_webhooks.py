"""POST /webhooks/stripe/: verified with the SDK, stored once by event id, applied in any order."""

from __future__ import annotations

import json
import logging

import pytest

from billing.adapters import stripe as stripe_api
from billing.models import Payment, Refund, StripeEvent
from billing.payments import CardDeclined
from billing.services import payments
from events.models import Event
from prescriptions.models import Status
from prescriptions.services import prescription_cancel
from tests.billing.factories import approved_prescription, deliver, event_types, events_by_type
from tests.outbox import owed_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def awaiting(stripe_sim, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    payments.payment_start(prescription_id=prescription.pk)
    return Payment.objects.get(prescription=prescription)


def pay(payment: Payment, method: str = "pm_card_visa", key: str = "confirm") -> None:
    stripe_api.payment_intent_confirm(
        intent_id=payment.stripe_payment_intent_id, payment_method=method, idempotency_key=key
    )


def status_of(payment: Payment) -> str:
    return payment.prescription.__class__.objects.get(pk=payment.prescription_id).status


def test_a_succeeded_payment_moves_the_prescription_to_paid_and_on_to_dispatch(stripe_sim, awaiting):  # type: ignore[no-untyped-def]
    pay(awaiting)
    body = events_by_type(stripe_sim, awaiting.stripe_payment_intent_id)["payment_intent.succeeded"]

    response = deliver(body)

    awaiting.refresh_from_db()
    assert response.status_code == 200
    assert response.json() == {"outcome": "applied"}
    assert awaiting.status == Payment.Status.SUCCEEDED
    assert status_of(awaiting) == Status.PAID
    paid = Event.objects.get(aggregate_id=awaiting.prescription_id, type="prescription.paid")
    assert paid.payload == {
        "from": "awaiting_payment",
        "to": "paid",
        "payment_id": awaiting.pk,
        "amount_minor": 306,
        "currency": "gbp",
    }
    assert paid.outbox is not None  # published to the dispatch consumer


def test_the_same_webhook_delivered_five_times_changes_state_once(stripe_sim, awaiting):  # type: ignore[no-untyped-def]
    pay(awaiting)
    body = events_by_type(stripe_sim, awaiting.stripe_payment_intent_id)["payment_intent.succeeded"]

    outcomes = [deliver(body).json()["outcome"] for _ in range(5)]

    assert outcomes == ["applied", "duplicate", "duplicate", "duplicate", "duplicate"]
    assert event_types(awaiting.prescription).count("prescription.paid") == 1
    assert StripeEvent.objects.count() == 1


def test_a_failure_delivered_after_the_success_is_ignored(stripe_sim, awaiting):  # type: ignore[no-untyped-def]
    with pytest.raises(CardDeclined):
        pay(awaiting, "pm_card_chargeDeclined", key="first-try")
    pay(awaiting, "pm_card_visa", key="second-try")
    bodies = events_by_type(stripe_sim, awaiting.stripe_payment_intent_id)

    # Out of order, and each twice.
    outcomes = [
        deliver(bodies[kind]).json()["outcome"]
        for kind in [
            "payment_intent.succeeded",
            "payment_intent.payment_failed",
            "payment_intent.succeeded",
            "payment_intent.payment_failed",
        ]
    ]

    assert outcomes == ["applied", "ignored", "duplicate", "duplicate"]
    assert status_of(awaiting) == Status.PAID
    assert "prescription.payment_failed" not in event_types(awaiting.prescription)


def test_a_declined_card_holds_the_prescription_and_records_a_phi_free_event(stripe_sim, awaiting):  # type: ignore[no-untyped-def]
    with pytest.raises(CardDeclined):
        pay(awaiting, "pm_card_chargeDeclined")
    body = events_by_type(stripe_sim, awaiting.stripe_payment_intent_id)["payment_intent.payment_failed"]

    assert deliver(body).json() == {"outcome": "applied"}

    awaiting.refresh_from_db()
    assert awaiting.status == Payment.Status.FAILED
    assert status_of(awaiting) == Status.PAYMENT_FAILED
    failed = Event.objects.get(aggregate_id=awaiting.prescription_id, type="prescription.payment_failed")
    assert failed.payload == {
        "from": "awaiting_payment",
        "to": "payment_failed",
        "payment_id": awaiting.pk,
        "amount_minor": 306,
        "currency": "gbp",
        "decline_code": "generic_decline",
    }


def test_a_retry_with_another_card_after_a_decline_pays(stripe_sim, awaiting):  # type: ignore[no-untyped-def]
    with pytest.raises(CardDeclined):
        pay(awaiting, "pm_card_chargeDeclined", key="first-try")
    bodies = events_by_type(stripe_sim, awaiting.stripe_payment_intent_id)
    deliver(bodies["payment_intent.payment_failed"])
    pay(awaiting, "pm_card_visa", key="second-try")

    deliver(events_by_type(stripe_sim, awaiting.stripe_payment_intent_id)["payment_intent.succeeded"])

    assert status_of(awaiting) == Status.PAID
    assert event_types(awaiting.prescription)[-2:] == ["prescription.payment_failed", "prescription.paid"]


def test_a_payment_that_lands_after_a_cancellation_is_refunded(stripe_sim, awaiting, clinic_a):  # type: ignore[no-untyped-def]
    prescription_cancel(
        clinic=clinic_a.clinic, prescription_id=awaiting.prescription_id, reason="changed mind"
    )
    pay(awaiting)
    body = events_by_type(stripe_sim, awaiting.stripe_payment_intent_id)["payment_intent.succeeded"]

    deliver(body)
    refund = Refund.objects.get(payment=awaiting)
    assert owed_tasks() == [(payments.REFUND_SEND_TASK, [refund.pk])]
    payments.refund_send(refund_id=refund.pk)  # what the owed task does

    assert status_of(awaiting) == Status.CANCELLED
    assert Payment.objects.get(pk=awaiting.pk).status == Payment.Status.REFUNDED
    assert stripe_sim.stats()["refunds_by_intent"] == {
        awaiting.stripe_payment_intent_id: [Refund.objects.get(pk=refund.pk).stripe_refund_id]
    }


@pytest.mark.parametrize(
    ("body", "header", "reason"),
    [
        ("{}", "t=1,v1=deadbeef", "bad or stale Stripe-Signature"),
        ("{}", "", "bad or stale Stripe-Signature"),
        ("not json", None, "body is not a Stripe event"),
        (
            '{"id": "evt_1", "object": "event", "type": "charge.captured", "data": {"object": {}}}',
            None,
            "unhandled event type 'charge.captured'",
        ),
        (
            '{"id": "evt_2", "object": "event", "type": "payment_intent.succeeded", "data": {"object": {"object": "charge"}}}',
            None,
            "event data is not a PaymentIntent",
        ),
        # A PaymentIntent's parts with other types (found by the webhook fuzzer): refused, not a 500.
        *(
            (
                json.dumps(
                    {
                        "id": f"evt_{index}",
                        "object": "event",
                        "type": event_type,
                        "data": {"object": {"object": "payment_intent", "id": "pi_1", **part}},
                    }
                ),
                None,
                "event data is not a PaymentIntent",
            )
            for index, (event_type, part) in enumerate(
                [
                    ("payment_intent.succeeded", {"metadata": 5}),
                    ("payment_intent.canceled", {"metadata": True}),
                    ("payment_intent.payment_failed", {"last_payment_error": "declined"}),
                    ("payment_intent.succeeded", {"id": 42}),
                ],
                start=3,
            )
        ),
    ],
)
def test_bad_webhooks_are_refused_with_400_and_change_nothing(db, body, header, reason, caplog):  # type: ignore[no-untyped-def]
    with caplog.at_level(logging.WARNING):
        response = deliver(body, header=header)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["detail"] == reason
    assert StripeEvent.objects.count() == 0
    assert f"stripe webhook rejected: {reason}" in caplog.text


def test_a_stale_signature_is_refused(stripe_sim, awaiting):  # type: ignore[no-untyped-def]
    import time

    pay(awaiting)
    body = events_by_type(stripe_sim, awaiting.stripe_payment_intent_id)["payment_intent.succeeded"]

    response = deliver(body, timestamp=int(time.time()) - 3600)

    assert response.status_code == 400
    assert status_of(awaiting) == Status.AWAITING_PAYMENT
    assert StripeEvent.objects.count() == 0


def test_a_signature_made_with_another_secret_is_refused(stripe_sim, awaiting):  # type: ignore[no-untyped-def]
    pay(awaiting)
    body = events_by_type(stripe_sim, awaiting.stripe_payment_intent_id)["payment_intent.succeeded"]

    response = deliver(body, secret="whsec_attacker")

    assert response.status_code == 400
    assert Payment.objects.get(pk=awaiting.pk).status == Payment.Status.REQUIRES_PAYMENT


def test_an_event_for_an_unknown_intent_is_stored_and_not_applied(db):  # type: ignore[no-untyped-def]
    body = json.dumps(
        {
            "id": "evt_unknown",
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {"object": {"id": "pi_elsewhere", "object": "payment_intent", "metadata": {}}},
        }
    )

    response = deliver(body)

    assert response.json() == {"outcome": "unknown-payment"}
    assert StripeEvent.objects.get().applied is False


def test_one_succeeded_webhook_costs_a_fixed_number_of_statements(
    stripe_sim, awaiting, clinic_a, paracetamol
):  # type: ignore[no-untyped-def]
    """One transaction: the guarded update of the payment the metadata names, returning the
    row, the prescription's transition, and the event stored with its outcome."""
    import time

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from common.signing import signature_header
    from prescriptions.services import prescription_transition
    from tests.billing.factories import SECRET

    other = approved_prescription(clinic_a, paracetamol)
    with CaptureQueriesContext(connection) as transition:
        assert prescription_transition(
            prescription_id=other.pk,
            to=Status.PAID,
            from_statuses=frozenset({Status.APPROVED}),
            event_type="prescription.paid",
            payload={"payment_id": 1, "amount_minor": 306, "currency": "gbp"},
            actor="stripe",
        )
    pay(awaiting)
    body = events_by_type(stripe_sim, awaiting.stripe_payment_intent_id)["payment_intent.succeeded"].encode()
    header = signature_header(secrets=[SECRET], body=body, timestamp=int(time.time()))

    with CaptureQueriesContext(connection) as webhook:
        assert payments.stripe_webhook_receive(body=body, signature_header=header) == "applied"

    # begin/savepoint, payment update, the transition, event insert, commit/release
    assert len(webhook) == 4 + len(transition)
    assert StripeEvent.objects.get().applied is True
    assert payments.stripe_webhook_receive(body=body, signature_header=header) == "duplicate"
    assert StripeEvent.objects.count() == 1


def test_a_success_whose_metadata_names_another_payment_applies_to_the_payment_of_its_intent(
    stripe_sim, awaiting, clinic_a, paracetamol
):  # type: ignore[no-untyped-def]
    """The metadata's payment has another intent: the event's intent decides, as without
    metadata; a payment id out of range is no payment."""
    other = approved_prescription(clinic_a, paracetamol)
    payments.payment_start(prescription_id=other.pk)
    other_payment = Payment.objects.get(prescription=other)
    for event_id, named in (("evt_other", str(other_payment.pk)), ("evt_huge", "9" * 30)):
        body = json.dumps(
            {
                "id": event_id,
                "object": "event",
                "type": "payment_intent.succeeded",
                "data": {
                    "object": {
                        "id": awaiting.stripe_payment_intent_id,
                        "object": "payment_intent",
                        "metadata": {"payment_id": named},
                    }
                },
            }
        )
        response = deliver(body)
        assert response.status_code == 200

    awaiting.refresh_from_db()
    other_payment.refresh_from_db()
    assert [event.applied for event in StripeEvent.objects.order_by("id")] == [True, False]
    assert awaiting.status == Payment.Status.SUCCEEDED
    assert other_payment.status == Payment.Status.REQUIRES_PAYMENT
    assert status_of(awaiting) == Status.PAID
