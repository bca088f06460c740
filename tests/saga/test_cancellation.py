"""Compensation after the pharmacy has the order: cancel at the gateway, then refund
exactly once; a pharmacy rejection is refunded the same way; a dispensed order goes to staff."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from django.test import Client

from billing.models import CancellationRequest, Refund
from billing.services import payments
from common.signing import signature_header
from events.models import Event, OutboxTask
from pharmacy import services as pharmacy
from pharmacy.gateway import GatewayUnavailable, OrderAlreadyDispensed
from pharmacy.models import Dispatch, GatewayCancellation
from pharmacy.services import CANCELLATION_SEND_TASK
from prescriptions.models import Prescription, Status
from saga import cancellation
from saga import tasks as saga_tasks
from tests.billing.factories import event_types
from tests.billing.test_refunds import paid_prescription
from tests.outbox import owed_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def gateway(gateway, settings):  # type: ignore[no-untyped-def]
    settings.GATEWAY_MAX_ATTEMPTS = 2  # these tests exhaust the retry budget quickly
    return gateway


@pytest.fixture
def acknowledged(stripe_sim, gateway, clinic_a, paracetamol, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    payment = paid_prescription(stripe_sim, clinic_a, paracetamol)
    with django_capture_on_commit_callbacks(execute=False):
        dispatch = pharmacy.dispatch_create(prescription_id=payment.prescription_id)
    assert pharmacy.dispatch_send(dispatch_id=dispatch.pk) == "acknowledged"
    return Dispatch.objects.get(pk=dispatch.pk)


def cancel(setup, prescription_id: int):  # type: ignore[no-untyped-def]
    return setup.api.post(
        f"/api/v1/prescriptions/{prescription_id}/cancel/", {"reason": "Dose changed"}, format="json"
    )


def run_consumers(prescription_id: int, event_type: str) -> None:
    """What the outbox relay does for billing's consumer, run twice as a redelivery would."""
    event = Event.objects.get(aggregate_id=prescription_id, type=event_type)
    for _ in range(2):
        saga_tasks.payment_compensate(event.pk)


def test_cancelling_an_acknowledged_order_cancels_it_at_the_gateway_then_refunds_once(
    acknowledged, stripe_sim, gateway, clinic_a, django_capture_on_commit_callbacks
):
    prescription_id = acknowledged.prescription_id
    # when the clinic cancels (twice)
    with django_capture_on_commit_callbacks(execute=False):
        first = cancel(clinic_a, prescription_id)
        again = cancel(clinic_a, prescription_id)
    # then the cancellation is accepted, pending at the gateway, sent once
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["status"] == Status.ACKNOWLEDGED
    cancellation = GatewayCancellation.objects.get()
    assert owed_tasks(CANCELLATION_SEND_TASK) == [(CANCELLATION_SEND_TASK, [cancellation.pk])]
    assert not CancellationRequest.objects.exists()
    # when the task runs (and is redelivered)
    assert pharmacy.gateway_cancellation_send(cancellation_id=cancellation.pk) == "cancelled"
    assert pharmacy.gateway_cancellation_send(cancellation_id=cancellation.pk) == "not-pending"
    run_consumers(prescription_id, "prescription.cancelled")
    # then one gateway cancellation, one refund, and every step recorded
    assert gateway.stats()["cancellations"] == 1
    prescription = Prescription.objects.get(pk=prescription_id)
    assert (prescription.status, prescription.status_reason) == (Status.CANCELLED, "Dose changed")
    assert Refund.objects.get().status == Refund.Status.SUCCEEDED
    assert stripe_sim.stats()["refunds"] == 1
    assert event_types(prescription)[-3:] == [
        "prescription.cancellation_requested",
        "prescription.cancelled",
        "prescription.refunded",
    ]
    assert cancel(clinic_a, prescription_id).status_code == 200


def test_a_gateway_that_already_dispensed_refuses_and_the_cancellation_goes_to_staff_unrefunded(
    acknowledged, stripe_sim, clinic_a, django_capture_on_commit_callbacks
):
    class DispensedGateway:
        def order_cancel(self, *, order_id: str, idempotency_key: str) -> None:
            raise OrderAlreadyDispensed("gateway refused the cancellation: The order is already dispensed.")

    with django_capture_on_commit_callbacks(execute=False):
        cancel(clinic_a, acknowledged.prescription_id)
    cancellation = GatewayCancellation.objects.get()
    outcome = pharmacy.gateway_cancellation_send(cancellation_id=cancellation.pk, gateway=DispensedGateway())
    refused = Event.objects.get(
        aggregate_id=acknowledged.prescription_id, type="prescription.cancellation_refused"
    )
    saga_tasks.cancellation_request_on_refused(refused.pk)
    saga_tasks.cancellation_request_on_refused(refused.pk)

    assert outcome == "refused"
    assert GatewayCancellation.objects.get().status == GatewayCancellation.Status.REFUSED
    assert Prescription.objects.get(pk=acknowledged.prescription_id).status == Status.ACKNOWLEDGED
    request = CancellationRequest.objects.get()
    assert (request.reason, request.needs_refund) == ("Dose changed", True)
    assert request.requested_by.startswith("client:")
    assert not Refund.objects.exists()
    assert stripe_sim.stats()["refunds"] == 0


def test_a_gateway_down_is_retried_then_given_up_to_staff(
    acknowledged, gateway, clinic_a, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        cancel(clinic_a, acknowledged.prescription_id)
    cancellation = GatewayCancellation.objects.get()
    gateway.control(down=True)
    with pytest.raises(GatewayUnavailable):
        pharmacy.gateway_cancellation_send(cancellation_id=cancellation.pk)
    assert pharmacy.gateway_cancellation_send(cancellation_id=cancellation.pk) == "failed"

    cancellation.refresh_from_db()
    assert (cancellation.status, cancellation.attempts) == (GatewayCancellation.Status.FAILED, 2)
    assert gateway.stats()["cancellations"] == 0
    assert Prescription.objects.get(pk=acknowledged.prescription_id).status == Status.ACKNOWLEDGED
    assert event_types(acknowledged.prescription)[-1] == "prescription.cancellation_refused"


def gateway_webhook(dispatch: Dispatch, type: str, **data) -> bytes:  # type: ignore[no-untyped-def]
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": type,
            "created": int(time.time()),
            "data": {
                "order_id": dispatch.gateway_order_id,
                "idempotency_key": str(dispatch.idempotency_key),
                **data,
            },
        }
    ).encode()


def post_gateway_webhook(body: bytes):  # type: ignore[no-untyped-def]
    header = signature_header(secrets=["sim-webhook-secret"], body=body)
    return Client().post(
        "/webhooks/gateway/", body, content_type="application/json", HTTP_GATEWAY_SIGNATURE=header
    )


def test_a_pharmacy_rejection_moves_the_prescription_and_refunds_it_once(acknowledged, stripe_sim):
    body = gateway_webhook(acknowledged, "order.rejected", reason="Out of stock")
    first = post_gateway_webhook(body)
    duplicate = post_gateway_webhook(body)
    run_consumers(acknowledged.prescription_id, "prescription.rejected_by_pharmacy")

    assert (first.status_code, duplicate.status_code) == (200, 200)
    prescription = Prescription.objects.get(pk=acknowledged.prescription_id)
    assert (prescription.status, prescription.status_reason) == (Status.REJECTED_BY_PHARMACY, "Out of stock")
    assert event_types(prescription)[-2:] == ["prescription.rejected_by_pharmacy", "prescription.refunded"]
    assert Event.objects.get(
        aggregate_id=prescription.pk, type="prescription.rejected_by_pharmacy"
    ).payload == {"from": "acknowledged", "to": "rejected_by_pharmacy"}
    assert stripe_sim.stats()["refunds"] == 1


def test_a_late_dispensed_webhook_after_a_rejection_changes_nothing(acknowledged):
    post_gateway_webhook(gateway_webhook(acknowledged, "order.rejected", reason="Out of stock"))
    late = post_gateway_webhook(gateway_webhook(acknowledged, "order.dispensed"))

    assert late.status_code == 200
    assert Prescription.objects.get(pk=acknowledged.prescription_id).status == Status.REJECTED_BY_PHARMACY
    assert event_types(acknowledged.prescription).count("prescription.dispensed") == 0


def test_an_acknowledged_webhook_records_the_acknowledgement_of_a_pending_dispatch(
    stripe_sim, clinic_a, paracetamol, django_capture_on_commit_callbacks
):
    payment = paid_prescription(stripe_sim, clinic_a, paracetamol)
    with django_capture_on_commit_callbacks(execute=False):
        dispatch = pharmacy.dispatch_create(prescription_id=payment.prescription_id)
    Dispatch.objects.filter(pk=dispatch.pk).update(gateway_order_id="ord_from_webhook")
    dispatch.refresh_from_db()

    response = post_gateway_webhook(gateway_webhook(dispatch, "order.acknowledged"))

    assert response.status_code == 200
    assert Dispatch.objects.get(pk=dispatch.pk).status == Dispatch.Status.ACKNOWLEDGED
    assert Prescription.objects.get(pk=payment.prescription_id).status == Status.ACKNOWLEDGED


def test_cancelling_before_dispatch_still_cancels_directly_without_the_gateway(
    stripe_sim, gateway, clinic_a, paracetamol
):
    payment = paid_prescription(stripe_sim, clinic_a, paracetamol)
    response = cancel(clinic_a, payment.prescription_id)
    assert response.status_code == 200
    assert response.json()["status"] == Status.CANCELLED
    assert not GatewayCancellation.objects.exists()
    assert gateway.stats()["cancellations"] == 0
    assert payments.payment_compensate(prescription_id=payment.prescription_id) == "refunded"


def test_staff_cancel_an_acknowledged_order_from_the_admin_through_the_same_compensation(
    acknowledged, admin_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        response = admin_client.post(
            "/admin/prescriptions/prescription/",
            {"action": "cancel_with_compensation", "_selected_action": [acknowledged.prescription_id]},
        )

    assert response.status_code == 302
    cancellation = GatewayCancellation.objects.get()
    assert (cancellation.reason, cancellation.requested_by) == (
        "Cancelled by staff",
        f"user:{admin_client.session['_auth_user_id']}",
    )
    assert owed_tasks(CANCELLATION_SEND_TASK) == [(CANCELLATION_SEND_TASK, [cancellation.pk])]
    assert Prescription.objects.get(pk=acknowledged.prescription_id).status == Status.ACKNOWLEDGED


def test_staff_cancelling_a_delivered_prescription_from_the_admin_changes_nothing_but_the_staff_queue(
    acknowledged, admin_client
):
    from tests.pharmacy.factories import force_status

    force_status(acknowledged.prescription, Status.DELIVERED)
    response = admin_client.post(
        "/admin/prescriptions/prescription/",
        {"action": "cancel_with_compensation", "_selected_action": [acknowledged.prescription_id]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Our staff will review the cancellation" in response.content.decode()
    assert not GatewayCancellation.objects.exists()
    assert Prescription.objects.get(pk=acknowledged.prescription_id).status == Status.DELIVERED
    assert CancellationRequest.objects.count() == 1


def test_an_order_acknowledged_after_its_prescription_was_cancelled_is_cancelled_at_the_gateway(
    stripe_sim, gateway, clinic_a, paracetamol, django_capture_on_commit_callbacks
):
    # given a dispatch in flight when the clinic cancels
    payment = paid_prescription(stripe_sim, clinic_a, paracetamol)
    with django_capture_on_commit_callbacks(execute=False):
        dispatch = pharmacy.dispatch_create(prescription_id=payment.prescription_id)
    assert cancel(clinic_a, payment.prescription_id).status_code == 200
    # when the gateway's acknowledgement lands afterwards
    with django_capture_on_commit_callbacks(execute=False):
        assert pharmacy.dispatch_record_acknowledged(dispatch_id=dispatch.pk, order_id="ord_in_flight")
    # then the unwanted order is cancelled there, and the prescription stays cancelled
    cancellation = GatewayCancellation.objects.get()
    assert (cancellation.dispatch_id, cancellation.reason) == (
        dispatch.pk,
        "Cancelled while the order was in flight",
    )
    assert owed_tasks(CANCELLATION_SEND_TASK) == [(CANCELLATION_SEND_TASK, [cancellation.pk])]
    assert Prescription.objects.get(pk=payment.prescription_id).status == Status.CANCELLED


def test_an_order_acknowledged_normally_opens_no_cancellation(acknowledged):
    assert not GatewayCancellation.objects.exists()


def test_a_cancel_repeated_after_the_gateway_confirmed_answers_200_cancelled(
    acknowledged, gateway, clinic_a, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        assert cancel(clinic_a, acknowledged.prescription_id).status_code == 202
    pharmacy.gateway_cancellation_send(cancellation_id=GatewayCancellation.objects.get().pk)

    again = cancel(clinic_a, acknowledged.prescription_id)

    assert (again.status_code, again.json()["status"]) == (200, Status.CANCELLED)
    assert GatewayCancellation.objects.count() == 1
    assert gateway.stats()["cancellations"] == 1


def test_a_repeated_request_racing_the_confirmation_returns_the_first_cancellation(
    acknowledged, gateway, django_capture_on_commit_callbacks
):
    # given the prescription went to cancelled between the caller's status read and its request
    with django_capture_on_commit_callbacks(execute=False):
        first = pharmacy.gateway_cancellation_request(
            prescription_id=acknowledged.prescription_id, reason="x"
        )
    pharmacy.gateway_cancellation_send(cancellation_id=first.pk)
    OutboxTask.objects.all().delete()  # the owed send ran
    # when the second request arrives
    with django_capture_on_commit_callbacks(execute=False):
        second = pharmacy.gateway_cancellation_request(
            prescription_id=acknowledged.prescription_id, reason="x"
        )
    # then it is the first one, and nothing new is sent
    assert second.pk == first.pk
    assert owed_tasks() == []
    assert event_types(acknowledged.prescription).count("prescription.cancellation_requested") == 1


def test_a_repeat_cancel_that_loses_the_race_to_the_gateways_confirmation_gets_the_cancelled_prescription(
    clinic_a, monkeypatch
):  # type: ignore[no-untyped-def]
    """Between the repeat's guarded update (refused: still acknowledged) and its re-read, the
    gateway confirmed the first cancel. The answer is the cancelled prescription, not a 409."""
    from prescriptions import services as prescription_services
    from tests.patients.factories import PatientFactory

    patient = PatientFactory(clinic=clinic_a.clinic)
    prescription = Prescription.objects.create(
        clinic=clinic_a.clinic,
        patient=patient,
        prescriber=clinic_a.prescriber,
        issued_on="2026-11-20",
        status=Status.CANCELLED,
    )

    def refused_while_acknowledged(**_):  # type: ignore[no-untyped-def]
        raise prescription_services.PrescriptionNotCancellable("It is with the pharmacy.")

    monkeypatch.setattr(prescription_services, "prescription_cancel", refused_while_acknowledged)

    answer = cancellation.prescription_cancel_request(
        clinic=clinic_a.clinic, prescription_id=prescription.pk, reason="again", actor="client:x"
    )

    assert answer.pk == prescription.pk
    assert answer.status == Status.CANCELLED
    assert not CancellationRequest.objects.filter(prescription_id=prescription.pk).exists()
