"""Taking payment for an approved private prescription (against the Stripe simulator)."""

from __future__ import annotations

import pytest

from billing import services
from billing.models import Payment
from billing.payments import PaymentUnavailable
from billing.services import payments
from events.models import Event
from prescriptions.models import Status
from saga import tasks
from tests.billing.factories import approved_prescription, event_types
from tests.prescriptions.factories import MedicationFactory

pytestmark = pytest.mark.django_db


def test_the_amount_is_prices_times_quantities_plus_the_dispensing_fee(clinic_a, formulary, settings):  # type: ignore[no-untyped-def]
    settings.BILLING_DISPENSING_FEE_MINOR = 250
    medication = MedicationFactory(price_minor=13)
    prescription = approved_prescription(clinic_a, medication, quantity=28)

    billable = payments.billable_read(prescription_id=prescription.pk)
    assert billable is not None
    assert billable.amount_minor == 13 * 28 + 250


def test_an_approved_private_prescription_gets_one_payment_intent_and_awaits_payment(
    stripe_sim, clinic_a, paracetamol
):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)

    outcome = services.prescription_bill(prescription_id=prescription.pk)

    payment = Payment.objects.get(prescription=prescription)
    prescription.refresh_from_db()
    assert outcome == "awaiting-payment"
    assert prescription.status == Status.AWAITING_PAYMENT
    assert payment.status == Payment.Status.REQUIRES_PAYMENT
    assert payment.amount_minor == 2 * 28 + 250
    assert payment.currency == "gbp"
    assert payment.idempotency_key == f"scriptline-payment-{prescription.pk}"
    assert stripe_sim.stats()["intents_by_key"] == {payment.idempotency_key: payment.stripe_payment_intent_id}
    assert payment.client_secret.startswith(payment.stripe_payment_intent_id)
    assert event_types(prescription)[-1] == "prescription.awaiting_payment"
    payload = (
        Event.objects.filter(aggregate_id=prescription.pk, type="prescription.awaiting_payment").get().payload
    )
    assert payload == {
        "from": "approved",
        "to": "awaiting_payment",
        "payment_id": payment.pk,
        "amount_minor": 306,
        "currency": "gbp",
    }


def test_the_same_payment_task_run_three_times_creates_one_payment_intent(stripe_sim, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    event = Event.objects.get(aggregate_id=prescription.pk, type="prescription.approved")

    for _ in range(3):
        tasks.billing_on_approved(event.pk)

    assert Payment.objects.filter(prescription=prescription).count() == 1
    assert stripe_sim.stats()["payment_intents"] == 1
    assert event_types(prescription).count("prescription.awaiting_payment") == 1


def test_a_task_that_died_after_stripe_answered_reuses_the_same_intent(
    stripe_sim, clinic_a, paracetamol, monkeypatch
):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    record = payments.payment_record_intent

    def worker_killed(**kwargs):  # type: ignore[no-untyped-def]
        raise SystemExit("worker killed before recording the intent")

    monkeypatch.setattr(payments, "payment_record_intent", worker_killed)
    with pytest.raises(SystemExit):
        payments.payment_start(prescription_id=prescription.pk)
    monkeypatch.setattr(payments, "payment_record_intent", record)

    payments.payment_start(prescription_id=prescription.pk)

    stats = stripe_sim.stats()
    payment = Payment.objects.get(prescription=prescription)
    assert stats["payment_intents"] == 1
    assert stats["idempotent_replays"] == 1
    assert stats["intents_by_key"] == {payment.idempotency_key: payment.stripe_payment_intent_id}
    assert payment.attempts == 2
    assert Payment.objects.get(pk=payment.pk).status == Payment.Status.REQUIRES_PAYMENT


def test_stripe_being_down_raises_for_a_retry_and_changes_no_status(stripe_sim, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    stripe_sim.control(down=True)
    prescription = approved_prescription(clinic_a, paracetamol)

    with pytest.raises(PaymentUnavailable):
        payments.payment_start(prescription_id=prescription.pk)

    payment = Payment.objects.get(prescription=prescription)
    prescription.refresh_from_db()
    assert payment.status == Payment.Status.CREATING
    assert payment.attempts == 1
    assert prescription.status == Status.APPROVED


def test_stripe_down_for_every_attempt_ends_in_error_without_a_retry(stripe_sim, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    stripe_sim.control(down=True)
    prescription = approved_prescription(clinic_a, paracetamol)
    for _ in range(2):
        with pytest.raises(PaymentUnavailable):
            payments.payment_start(prescription_id=prescription.pk)

    outcome = payments.payment_start(prescription_id=prescription.pk)

    payment = Payment.objects.get(prescription=prescription)
    assert outcome == "error"
    assert payment.status == Payment.Status.ERROR
    assert payment.attempts == 3
    assert event_types(prescription)[-1] == "prescription.payment_error"


def test_a_prescription_that_is_not_approved_is_not_charged(stripe_sim, clinic_a, methylphenidate):  # type: ignore[no-untyped-def]
    from tests.pharmacy.factories import approved_prescription as checked_prescription

    prescription = checked_prescription(clinic_a, methylphenidate)  # waits for a pharmacist

    outcome = services.prescription_bill(prescription_id=prescription.pk)

    assert outcome == "not-approved"
    assert not Payment.objects.exists()
    assert stripe_sim.stats()["requests"] == 0


def test_the_api_returns_the_client_secret_while_the_payment_is_collected(stripe_sim, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    payments.payment_start(prescription_id=prescription.pk)
    payment = Payment.objects.get(prescription=prescription)

    response = clinic_a.api.get(f"/api/v1/prescriptions/{prescription.pk}/")

    assert response.status_code == 200
    assert response.json()["funding"] == "private"
    assert response.json()["payment"] == {
        "status": "requires_payment",
        "amount_minor": 306,
        "currency": "gbp",
        "client_secret": payment.client_secret,
    }


def test_the_prescription_list_costs_the_same_queries_with_payments(
    stripe_sim, clinic_a, paracetamol, django_assert_max_num_queries
):  # type: ignore[no-untyped-def]
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    first = approved_prescription(clinic_a, paracetamol)
    payments.payment_start(prescription_id=first.pk)
    clinic_a.api.get("/api/v1/prescriptions/")  # warm-up: the first request records last use
    with CaptureQueriesContext(connection) as one:
        assert clinic_a.api.get("/api/v1/prescriptions/").status_code == 200
    for _ in range(4):
        payments.payment_start(prescription_id=approved_prescription(clinic_a, paracetamol).pk)

    with CaptureQueriesContext(connection) as five:
        response = clinic_a.api.get("/api/v1/prescriptions/")

    assert len(response.json()["results"]) == 5
    assert all(row["payment"]["status"] == "requires_payment" for row in response.json()["results"])
    assert len(five) == len(one)


def _transition_statements(prescription_id: int, to: str, from_status: str) -> int:  # type: ignore[no-untyped-def]
    """How many statements one guarded prescription transition with its event costs."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from prescriptions.services import prescription_transition

    with CaptureQueriesContext(connection) as transition:
        assert prescription_transition(
            prescription_id=prescription_id,
            to=to,
            from_statuses=frozenset({from_status}),
            event_type=f"prescription.{to}",
            payload={"payment_id": 1, "amount_minor": 306, "currency": "gbp"},
            actor="billing",
        )
    return len(transition)


def test_billing_an_approved_prescription_costs_a_fixed_number_of_statements(
    stripe_sim, clinic_a, paracetamol
):  # type: ignore[no-untyped-def]
    """One read of the prescription (funding, clinic, price), the payment created and the
    attempt counted in one statement before Stripe is called, then the intent recorded with the
    transition in one transaction."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    prescription = approved_prescription(clinic_a, paracetamol)
    other = approved_prescription(clinic_a, paracetamol)
    transition = _transition_statements(other.pk, Status.AWAITING_PAYMENT, Status.APPROVED)

    with CaptureQueriesContext(connection) as billing:
        assert services.prescription_bill(prescription_id=prescription.pk) == "awaiting-payment"

    # read, upsert, then (begin/savepoint, record the intent, the transition, commit/release)
    assert len(billing) == 2 + 3 + transition
    sql = [query["sql"] for query in billing.captured_queries]
    assert sql[1].startswith('INSERT INTO "billing_payment"')
    payment = Payment.objects.get(prescription=prescription)
    assert (payment.attempts, payment.status) == (1, Payment.Status.REQUIRES_PAYMENT)
