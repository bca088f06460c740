"""Cancellation compensation: a paid prescription cancelled before dispensing is refunded
exactly once; an unpaid one has its PaymentIntent cancelled; a dispensed one goes to staff."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from billing.adapters import stripe as stripe_api
from billing.models import CancellationRequest, Payment, Refund
from billing.services import payments
from events.models import Event
from prescriptions.models import Prescription, Status
from saga import cancellation, tasks
from tests.billing.factories import approved_prescription, deliver, event_types, events_by_type
from tests.pharmacy.factories import force_status


def paid_prescription(stripe_sim, setup, medication) -> Payment:  # type: ignore[no-untyped-def]
    prescription = approved_prescription(setup, medication)
    payments.payment_start(prescription_id=prescription.pk)
    payment = Payment.objects.get(prescription=prescription)
    stripe_api.payment_intent_confirm(
        intent_id=payment.stripe_payment_intent_id, payment_method="pm_card_visa", idempotency_key="pay"
    )
    deliver(events_by_type(stripe_sim, payment.stripe_payment_intent_id)["payment_intent.succeeded"])
    assert Prescription.objects.get(pk=prescription.pk).status == Status.PAID
    return payment


def cancelled_event(prescription_id: int) -> Event:
    return Event.objects.get(aggregate_id=prescription_id, type="prescription.cancelled")


def run_in_threads(target, count: int = 2) -> list:  # type: ignore[no-untyped-def]
    results: list = []
    barrier = threading.Barrier(count)

    def run() -> None:
        barrier.wait()
        try:
            results.append(target())
        except Exception as error:  # noqa: BLE001 - the test inspects what each thread got
            results.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@pytest.mark.django_db
def test_cancelling_a_paid_prescription_refunds_it_once(stripe_sim, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    payment = paid_prescription(stripe_sim, clinic_a, paracetamol)

    response = clinic_a.api.post(
        f"/api/v1/prescriptions/{payment.prescription_id}/cancel/",
        {"reason": "no longer needed"},
        format="json",
    )
    event = cancelled_event(payment.prescription_id)
    tasks.payment_compensate(event.pk)
    tasks.payment_compensate(event.pk)  # redelivered

    refund = Refund.objects.get(payment=payment)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert refund.status == Refund.Status.SUCCEEDED
    assert refund.amount_minor == 306
    assert refund.idempotency_key == f"scriptline-refund-{payment.pk}"
    assert Payment.objects.get(pk=payment.pk).status == Payment.Status.REFUNDED
    assert stripe_sim.stats()["refunds_by_intent"] == {
        payment.stripe_payment_intent_id: [refund.stripe_refund_id]
    }
    assert event_types(payment.prescription)[-2:] == ["prescription.cancelled", "prescription.refunded"]
    refunded = Event.objects.get(aggregate_id=payment.prescription_id, type="prescription.refunded")
    assert refunded.payload == {
        "refund_id": refund.pk,
        "payment_id": payment.pk,
        "amount_minor": 306,
        "currency": "gbp",
    }


@pytest.mark.django_db(transaction=True)
def test_two_racing_cancels_of_a_paid_prescription_make_exactly_one_refund(stripe_sim, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    payment = paid_prescription(stripe_sim, clinic_a, paracetamol)

    cancels = run_in_threads(
        lambda: (
            cancellation.prescription_cancel_request(
                clinic=clinic_a.clinic, prescription_id=payment.prescription_id, reason="race", actor="test"
            ).status
        )
    )
    event = cancelled_event(payment.prescription_id)  # exactly one, or .get() raises
    compensations = run_in_threads(
        lambda: payments.payment_compensate(prescription_id=payment.prescription_id)
    )

    assert cancels == [Status.CANCELLED, Status.CANCELLED]
    assert event.type == "prescription.cancelled"
    # The loser either finds the refund done, or sends the same idempotency key and is replayed.
    assert "refunded" in compensations
    assert set(compensations) <= {"refunded", "not-pending"}
    assert Refund.objects.filter(payment=payment).count() == 1
    assert len(stripe_sim.stats()["refunds_by_intent"][payment.stripe_payment_intent_id]) == 1
    assert event_types(payment.prescription).count("prescription.refunded") == 1


@pytest.mark.django_db
def test_cancelling_while_awaiting_payment_cancels_the_intent_and_refunds_nothing(
    stripe_sim, clinic_a, paracetamol
):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    payments.payment_start(prescription_id=prescription.pk)
    payment = Payment.objects.get(prescription=prescription)

    clinic_a.api.post(f"/api/v1/prescriptions/{prescription.pk}/cancel/", {"reason": "wrong"}, format="json")
    outcome = payments.payment_compensate(prescription_id=prescription.pk)

    assert outcome == "cancelled"
    assert Payment.objects.get(pk=payment.pk).status == Payment.Status.CANCELLED
    assert stripe_sim.stats()["intent_statuses"] == {payment.stripe_payment_intent_id: "canceled"}
    assert not Refund.objects.exists()


@pytest.mark.django_db
def test_a_refund_stripe_refuses_is_failed_for_staff_and_not_retried(stripe_sim, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    payment = paid_prescription(stripe_sim, clinic_a, paracetamol)
    stripe_api.refund_create(  # refunded at Stripe by someone else, with another key
        intent_id=payment.stripe_payment_intent_id, amount_minor=306, metadata={}, idempotency_key="dashboard"
    )
    cancellation.prescription_cancel_request(
        clinic=clinic_a.clinic, prescription_id=payment.prescription_id, reason="x", actor="test"
    )

    outcome = payments.payment_compensate(prescription_id=payment.prescription_id)

    refund = Refund.objects.get(payment=payment)
    assert outcome == "failed"
    assert refund.status == Refund.Status.FAILED
    assert "already been refunded" in refund.last_error
    assert event_types(payment.prescription)[-1] == "prescription.refund_failed"


@pytest.mark.django_db
@pytest.mark.parametrize("status", [Status.DISPENSED, Status.DELIVERED, Status.ACKNOWLEDGED])
def test_cancelling_a_dispensed_paid_prescription_is_409_and_queued_for_staff(
    stripe_sim, clinic_a, paracetamol, status
):  # type: ignore[no-untyped-def]
    payment = paid_prescription(stripe_sim, clinic_a, paracetamol)
    force_status(payment.prescription, status)

    first = clinic_a.api.post(
        f"/api/v1/prescriptions/{payment.prescription_id}/cancel/", {"reason": "late"}, format="json"
    )
    again = clinic_a.api.post(
        f"/api/v1/prescriptions/{payment.prescription_id}/cancel/", {"reason": "late"}, format="json"
    )

    request = CancellationRequest.objects.get()
    assert first.status_code == 409
    assert first["Content-Type"] == "application/problem+json"
    assert first.json()["detail"].endswith(
        f"Our staff will review the cancellation and the refund (request #{request.pk})."
    )
    assert again.json()["detail"] == first.json()["detail"]
    assert request.payment_id == payment.pk
    assert request.status_when_requested == status
    assert request.reason == "late"
    assert Prescription.objects.get(pk=payment.prescription_id).status == status
    assert not Refund.objects.exists()
    assert stripe_sim.stats()["refunds"] == 0


@pytest.mark.django_db
def test_cancelling_another_clinics_prescription_is_404_and_queues_nothing(
    stripe_sim, clinic_a, clinic_b, paracetamol
):  # type: ignore[no-untyped-def]
    payment = paid_prescription(stripe_sim, clinic_a, paracetamol)
    force_status(payment.prescription, Status.DISPENSED)

    foreign = clinic_b.api.post(
        f"/api/v1/prescriptions/{payment.prescription_id}/cancel/", {"reason": "x"}, format="json"
    )
    unknown = clinic_b.api.post("/api/v1/prescriptions/999999/cancel/", {"reason": "x"}, format="json")

    assert foreign.status_code == 404
    assert unknown.status_code == 404
    assert not CancellationRequest.objects.exists()
