"""Gateway webhooks duplicated and shuffled; a request that fails before its commit.

Invariants 3 (no state change without exactly one event), 7 and 8.
"""

from __future__ import annotations

import json
import random

import pytest
from django.conf import settings
from django.db import transaction

from accounts import idempotency
from common.signing import signature_header
from config.celery import app
from events.models import Event, OutboxMessage
from patients.models import IdempotencyKey
from pharmacy import services as pharmacy
from pharmacy.models import Dispatch, GatewayWebhookEvent
from prescriptions.models import Prescription, Status
from tests.conftest import prescription_body
from tests.faults.pipeline import nhs_funded_prescriptions

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("core_consumers_only")]

PROGRESS = ("order.dispensed", "order.shipped", "order.delivered")


def acknowledged_dispatches(setup, medication, count: int) -> list[Dispatch]:  # type: ignore[no-untyped-def]
    ids = nhs_funded_prescriptions(setup, medication, count)
    dispatches = []
    for index, prescription_id in enumerate(ids):
        dispatch = Dispatch.objects.create(prescription_id=prescription_id)
        assert pharmacy.dispatch_record_acknowledged(dispatch_id=dispatch.pk, order_id=f"ord_{index}")
        dispatches.append(Dispatch.objects.get(pk=dispatch.pk))
    return dispatches


def webhook_body(dispatch: Dispatch, event_type: str) -> bytes:
    data = {"order_id": dispatch.gateway_order_id, "idempotency_key": str(dispatch.idempotency_key)}
    if event_type != "order.dispensed":
        data["tracking_number"] = f"TRK{dispatch.pk}"
    event = {"id": f"evt_{dispatch.pk}_{event_type}", "type": event_type, "created": 0, "data": data}
    return json.dumps(event).encode()


def test_duplicated_and_shuffled_gateway_webhooks_end_delivered_with_one_event_per_real_change(
    clinic_a, paracetamol, client
):
    # Invariant: whatever the order and however often each webhook arrives, every prescription
    # ends delivered with its tracking number, each distinct webhook is stored once, and each
    # applied webhook made exactly one event (a late "shipped" after "delivered" makes none).
    dispatches = acknowledged_dispatches(clinic_a, paracetamol, 8)
    deliveries = [webhook_body(d, kind) for d in dispatches for kind in PROGRESS]
    rng = random.Random(5)
    deliveries += rng.choices(deliveries, k=len(deliveries))  # 24 duplicates
    rng.shuffle(deliveries)

    outcomes = []
    for body in deliveries:
        header = signature_header(secrets=[settings.GATEWAY_WEBHOOK_SECRET], body=body)
        response = client.post(
            "/webhooks/gateway/", data=body, content_type="application/json", HTTP_GATEWAY_SIGNATURE=header
        )
        assert response.status_code == 200, response.content
        outcomes.append(response.json()["outcome"])

    ids = [d.prescription_id for d in dispatches]
    assert outcomes.count("duplicate") == 24
    assert list(
        Prescription.objects.filter(pk__in=ids).order_by("pk").values_list("status", "tracking_number")
    ) == [(Status.DELIVERED, f"TRK{d.pk}") for d in dispatches]
    assert GatewayWebhookEvent.objects.count() == 24
    applied = GatewayWebhookEvent.objects.filter(applied=True).count()
    progress_events = Event.objects.filter(
        aggregate_id__in=ids,
        type__in=["prescription.dispensed", "prescription.shipped", "prescription.delivered"],
    )
    assert progress_events.count() == applied == outcomes.count("applied")
    assert Event.objects.filter(aggregate_id__in=ids, type="prescription.delivered").count() == 8


def test_a_request_that_fails_after_writing_the_prescription_but_before_commit_leaves_nothing(
    transactional_db, clinic_a, patient_a, paracetamol, monkeypatch, settings
):
    # Invariant: the prescription, its event and its outbox row are one transaction with the
    # idempotency record; if that record cannot be written the whole request rolls back and no
    # task is published. The failure surfaces as an exception (a 500 in production): that is
    # a server fault, not bad input, and it is the only outcome that stores nothing.
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    published: list[str] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **_: published.append(name))
    real_insert = idempotency._key_insert

    def failing_insert(stored):  # type: ignore[no-untyped-def]
        assert transaction.get_connection().in_atomic_block
        assert Prescription.objects.count() == 1  # the row is written, not yet committed
        raise RuntimeError("database went away before commit")

    monkeypatch.setattr(idempotency, "_key_insert", failing_insert)
    body = prescription_body(patient_a.pk, clinic_a.prescriber.pk, paracetamol)

    try:
        outcome = clinic_a.api.post(
            "/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="fails-before-commit"
        ).status_code
    except RuntimeError:
        outcome = "raised"

    assert outcome in ("raised", 500)
    assert Prescription.objects.count() == 0
    assert Event.objects.count() == 0
    assert OutboxMessage.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0
    assert published == []

    # The same request once the fault is gone is stored and published: the test can fail.
    monkeypatch.setattr(idempotency, "_key_insert", real_insert)
    response = clinic_a.api.post(
        "/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="fails-before-commit"
    )
    assert response.status_code == 201, response.content
    assert Prescription.objects.count() == 1
    assert published == ["prescriptions.tasks.prescription_check"]
