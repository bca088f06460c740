"""Signed gateway webhooks: verified, stored once, applied in any order, forward only."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from common.signing import signature_header
from events.models import Event
from pharmacy.models import Dispatch, GatewayWebhookEvent
from prescriptions.models import Prescription, Status
from tests.pharmacy.factories import approved_prescription
from tests.queries import verbs

pytestmark = pytest.mark.django_db
URL = "/webhooks/gateway/"


@pytest.fixture
def acknowledged(clinic_a, paracetamol, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    from pharmacy import services

    prescription = approved_prescription(clinic_a, paracetamol)
    with django_capture_on_commit_callbacks(execute=False):
        dispatch = services.dispatch_create(prescription_id=prescription.pk)
    services.dispatch_record_acknowledged(dispatch_id=dispatch.pk, order_id="ord_1")
    dispatch.refresh_from_db()
    return dispatch


def event(dispatch: Dispatch, type: str, event_id: str | None = None, **data) -> bytes:  # type: ignore[no-untyped-def]
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex}",
            "type": type,
            "created": int(time.time()),
            "data": {
                "order_id": dispatch.gateway_order_id,
                "idempotency_key": str(dispatch.idempotency_key),
                **data,
            },
        }
    ).encode()


def deliver(body: bytes, secret: str = "sim-webhook-secret", timestamp: int | None = None):  # type: ignore[no-untyped-def]
    header = signature_header(secrets=[secret], body=body, timestamp=timestamp or int(time.time()))
    return Client().post(URL, body, content_type="application/json", HTTP_GATEWAY_SIGNATURE=header)


def status_of(dispatch: Dispatch) -> str:
    return Prescription.objects.get(pk=dispatch.prescription_id).status


def events_of(dispatch: Dispatch) -> list[str]:
    return list(
        Event.objects.filter(aggregate_type="prescription", aggregate_id=dispatch.prescription_id)
        .order_by("sequence")
        .values_list("type", flat=True)
    )


def test_a_signed_dispensed_event_moves_the_prescription_on(acknowledged):  # type: ignore[no-untyped-def]
    response = deliver(event(acknowledged, "order.dispensed"))

    assert response.status_code == 200
    assert response.json() == {"outcome": "applied"}
    assert status_of(acknowledged) == Status.DISPENSED


def test_the_same_event_delivered_five_times_changes_state_once(acknowledged):  # type: ignore[no-untyped-def]
    body = event(acknowledged, "order.shipped", event_id="evt_same", tracking_number="SIM0000000001")

    outcomes = [deliver(body).json()["outcome"] for _ in range(5)]

    assert outcomes == ["applied", "duplicate", "duplicate", "duplicate", "duplicate"]
    assert events_of(acknowledged).count("prescription.shipped") == 1
    assert GatewayWebhookEvent.objects.count() == 1
    assert Prescription.objects.get(pk=acknowledged.prescription_id).tracking_number == "SIM0000000001"


def test_a_late_shipped_after_delivered_changes_nothing(acknowledged):  # type: ignore[no-untyped-def]
    deliver(event(acknowledged, "order.delivered", tracking_number="SIM0000000002"))

    late = deliver(event(acknowledged, "order.shipped", tracking_number="SIM0000000002"))

    assert late.json() == {"outcome": "ignored"}
    assert status_of(acknowledged) == Status.DELIVERED
    assert events_of(acknowledged)[-1] == "prescription.delivered"
    assert "prescription.shipped" not in events_of(acknowledged)


@pytest.mark.parametrize(
    ("secret", "age", "reason"),
    [("wrong-secret", 0, "bad Gateway-Signature"), ("sim-webhook-secret", 3600, "stale")],
)
def test_a_bad_or_stale_signature_is_refused_and_changes_nothing(acknowledged, secret, age, reason):  # type: ignore[no-untyped-def]
    response = deliver(
        event(acknowledged, "order.dispensed"), secret=secret, timestamp=int(time.time()) - age
    )

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert reason in response.json()["detail"]
    assert status_of(acknowledged) == Status.ACKNOWLEDGED
    assert GatewayWebhookEvent.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "body is not JSON"),
        (b'{"id": "evt_1", "type": "order.exploded", "data": {}}', "unknown event type"),
        (b'{"id": "evt_1", "type": "order.dispensed"}', "event must be an object with data"),
        (b"[1, 2]", "event must be an object with data"),
    ],
)
def test_a_malformed_event_is_refused(acknowledged, body, detail):  # type: ignore[no-untyped-def]
    response = deliver(body)

    assert response.status_code == 400
    assert detail in response.json()["detail"]
    assert status_of(acknowledged) == Status.ACKNOWLEDGED


def test_a_missing_signature_header_is_refused(acknowledged):  # type: ignore[no-untyped-def]
    response = Client().post(URL, event(acknowledged, "order.dispensed"), content_type="application/json")

    assert response.status_code == 400
    assert status_of(acknowledged) == Status.ACKNOWLEDGED


def test_an_event_for_an_unknown_order_is_404(acknowledged):  # type: ignore[no-untyped-def]
    body = json.dumps(
        {
            "id": "evt_x",
            "type": "order.dispensed",
            "data": {"order_id": "ord_nope", "idempotency_key": str(uuid.uuid4())},
        }
    ).encode()

    assert deliver(body).status_code == 404
    assert GatewayWebhookEvent.objects.count() == 0


def test_an_event_ahead_of_our_acknowledgement_records_it_then_applies_the_event(pending):  # type: ignore[no-untyped-def]
    acknowledged = pending  # by the gateway, not yet by us

    # When the gateway's dispensed event arrives first
    response = deliver(event(acknowledged, "order.dispensed", order_id="ord_from_the_gateway"))

    # Then the event proves the order: acknowledged (with the gateway's order id), then dispensed
    assert response.status_code == 200
    dispatch = Dispatch.objects.get(pk=acknowledged.pk)
    assert (dispatch.status, dispatch.gateway_order_id) == (
        Dispatch.Status.ACKNOWLEDGED,
        "ord_from_the_gateway",
    )
    assert status_of(acknowledged) == Status.DISPENSED
    assert events_of(acknowledged)[-2:] == ["prescription.acknowledged", "prescription.dispensed"]
    assert GatewayWebhookEvent.objects.get().applied is True


def test_each_later_event_ahead_of_our_acknowledgement_moves_the_order_to_delivered_once(pending):  # type: ignore[no-untyped-def]
    acknowledged = pending
    bodies = [
        event(acknowledged, "order.dispensed", order_id="ord_g"),
        event(acknowledged, "order.shipped", order_id="ord_g", tracking_number="SIM123"),
        event(acknowledged, "order.delivered", order_id="ord_g"),
    ]

    answers = [deliver(body).status_code for body in [bodies[2], bodies[0], bodies[1], bodies[2]]]

    assert answers == [200, 200, 200, 200]
    assert status_of(acknowledged) == Status.DELIVERED
    assert events_of(acknowledged).count("prescription.acknowledged") == 1
    assert events_of(acknowledged)[-2:] == ["prescription.acknowledged", "prescription.delivered"]


def test_an_event_ahead_of_our_acknowledgement_without_an_order_id_is_refused_and_changes_nothing(pending):  # type: ignore[no-untyped-def]
    before = status_of(pending)

    response = deliver(event(pending, "order.dispensed", order_id=""))

    assert response.status_code == 400
    assert Dispatch.objects.get(pk=pending.pk).status == Dispatch.Status.PENDING
    assert status_of(pending) == before
    assert GatewayWebhookEvent.objects.count() == 0


@pytest.fixture
def pending(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    """Sent, but the gateway's answer never recorded (the worker died before our commit)."""
    from pharmacy import services

    prescription = approved_prescription(clinic_a, paracetamol)
    return services.dispatch_create(prescription_id=prescription.pk)


def test_get_is_not_allowed(db):  # type: ignore[no-untyped-def]
    assert Client().get(URL).status_code == 405


def test_a_bad_signature_is_refused_before_the_body_is_judged(acknowledged):  # type: ignore[no-untyped-def]
    unknown_order = json.dumps(
        {"id": "evt_x", "type": "order.dispensed", "data": {"order_id": "ord_nope"}}
    ).encode()

    for body in [b"{not json", unknown_order]:
        response = deliver(body, secret="wrong-secret")

        assert response.status_code == 400
        assert response.json()["detail"] == "bad Gateway-Signature"


@pytest.mark.django_db(transaction=True)
def test_one_progress_webhook_is_one_read_and_one_transaction_of_three_writes(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    from pharmacy import routing, services

    routing.default_partner_ensure()  # a migration's row: gone after an earlier test's flush
    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = services.dispatch_create(prescription_id=prescription.pk)
    services.dispatch_record_acknowledged(dispatch_id=dispatch.pk, order_id="ord_1")
    dispatch.refresh_from_db()
    body = event(dispatch, "order.shipped", tracking_number="SIM0000000003")

    with CaptureQueriesContext(connection) as statements:
        response = deliver(body)

    assert response.json() == {"outcome": "applied"}
    # The secrets with the dispatch and its partner; then the guarded move of the prescription,
    # its event, and the webhook event stored with its outcome.
    assert verbs(statements) == [
        "SELECT",
        "BEGIN",
        "UPDATE",
        "WITH",
        "INSERT",
        "COMMIT",
    ]
    assert status_of(dispatch) == Status.SHIPPED
    assert events_of(dispatch)[-1] == "prescription.shipped"
    stored = GatewayWebhookEvent.objects.get()
    assert (stored.applied, stored.type) == (True, "order.shipped")
    shipped = Event.objects.filter(aggregate_id=dispatch.prescription_id, type="prescription.shipped").get()
    assert shipped.payload == {"from": "acknowledged", "to": "shipped", "tracking_number": "SIM0000000003"}
    assert shipped.clinic_id == clinic_a.clinic.pk

    # A redelivery moves nothing and stores nothing: the same read, then a rolled-back attempt.
    with CaptureQueriesContext(connection) as statements:
        response = deliver(body)

    assert response.json() == {"outcome": "duplicate"}
    assert verbs(statements) == [
        "SELECT",
        "BEGIN",
        "UPDATE",
        "INSERT",
        "ROLLBACK",
    ]
    assert GatewayWebhookEvent.objects.count() == 1
    assert events_of(dispatch).count("prescription.shipped") == 1
