"""Partners' signed webhooks: stock levels, and order events signed by the partner holding the order."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from django.test import Client

from common.signing import signature_header
from events.models import OutboxTask
from pharmacy import services
from pharmacy.models import Dispatch, Partner, PartnerStock, StockFeedEvent
from tests.outbox import owed_tasks
from tests.pharmacy.factories import approved_prescription

pytestmark = pytest.mark.django_db

SECRET = "east-stock-secret"


@pytest.fixture
def east(settings) -> Partner:  # type: ignore[no-untyped-def]
    settings.PARTNER_SECRETS = {
        "east": {"url": "http://127.0.0.1:9", "api_key": "east-key", "webhook_secret": SECRET}
    }
    return Partner.objects.create(code="east", name="East", countries=["US"], us_states=["NY"])


def feed(*items: tuple[str, object], event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": f"stk_{uuid.uuid4().hex}" if event_id is None else event_id,
            "items": [{"product_code": code, "quantity": quantity} for code, quantity in items],
        }
    ).encode()


def post(body: bytes, *, partner: str = "east", secret: str = SECRET, timestamp: int | None = None):  # type: ignore[no-untyped-def]
    header = signature_header(secrets=[secret], body=body, timestamp=timestamp or int(time.time()))
    return Client().post(
        f"/webhooks/partners/{partner}/stock/",
        body,
        content_type="application/json",
        HTTP_PARTNER_SIGNATURE=header,
    )


def levels() -> dict[str, int]:
    return dict(PartnerStock.objects.values_list("product_code", "quantity"))


def test_a_signed_stock_feed_replaces_the_levels_it_names(east, django_assert_max_num_queries):  # type: ignore[no-untyped-def]
    PartnerStock.objects.create(
        partner=east, product_code="a", quantity=1, source="csv", updated_at="2026-01-01T00:00Z"
    )

    with django_assert_max_num_queries(8):
        response = post(feed(("a", 0), ("b", 40)))

    assert response.status_code == 200
    assert response.json() == {"outcome": "applied"}
    assert levels() == {"a": 0, "b": 40}
    assert set(PartnerStock.objects.values_list("source", flat=True)) == {"webhook"}
    assert StockFeedEvent.objects.get().items == 2


def test_a_redelivered_feed_changes_nothing(east):  # type: ignore[no-untyped-def]
    assert post(feed(("a", 3), event_id="stk_1")).json() == {"outcome": "applied"}
    PartnerStock.objects.update(quantity=9)

    assert post(feed(("a", 3), event_id="stk_1")).json() == {"outcome": "duplicate"}
    assert levels() == {"a": 9}


@pytest.mark.parametrize(
    ("body", "secret", "age", "detail"),
    [
        (feed(("a", 3)), "wrong-secret", 0, "bad or stale Partner-Signature"),
        (feed(("a", 3)), SECRET, 3600, "bad or stale Partner-Signature"),
        (b"not json", SECRET, 0, "body is not JSON"),
        (json.dumps({"id": "x"}).encode(), SECRET, 0, "a stock feed is an object with items"),
        (feed(("a", 3), event_id=""), SECRET, 0, "id must be 1-80 characters"),
        (feed(("a", 3), ("b", -1)), SECRET, 0, "line 2: quantity must be a whole number from 0 to 10000000"),
        (feed(("a", "3")), SECRET, 0, "line 1: quantity must be a whole number from 0 to 10000000"),
        (feed(("", 3)), SECRET, 0, "line 1: product_code must be 1-40 characters"),
    ],
)
def test_a_bad_feed_is_refused_whole_and_changes_nothing(east, body, secret, age, detail):  # type: ignore[no-untyped-def]
    PartnerStock.objects.create(
        partner=east, product_code="a", quantity=1, source="csv", updated_at="2026-01-01T00:00Z"
    )

    response = post(body, secret=secret, timestamp=int(time.time()) - age)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["detail"] == detail
    assert levels() == {"a": 1}
    assert not StockFeedEvent.objects.exists()


def test_an_unknown_or_inactive_partner_is_not_found(east):  # type: ignore[no-untyped-def]
    Partner.objects.filter(pk=east.pk).update(is_active=False)

    assert post(feed(("a", 3))).status_code == 404
    assert post(feed(("a", 3)), partner="nobody").status_code == 404
    assert not PartnerStock.objects.exists()


def test_a_feed_owes_routing_again_only_when_something_waits(east, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    post(feed(("a", 3)))
    assert services.ROUTE_WAITING_TASK not in [task for task, _ in owed_tasks()]

    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = services.dispatch_create(prescription_id=prescription.pk)
    Dispatch.objects.filter(pk=dispatch.pk).update(status=Dispatch.Status.AWAITING_PARTNER)
    post(feed(("a", 4)))

    assert OutboxTask.objects.filter(task=services.ROUTE_WAITING_TASK).count() == 1


def test_an_order_event_signed_by_another_partner_is_refused(east, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = services.dispatch_create(prescription_id=prescription.pk)
    services.dispatch_record_acknowledged(dispatch_id=dispatch.pk, order_id="ord_1")  # at the default partner
    body = json.dumps(
        {
            "id": "evt_1",
            "type": "order.dispensed",
            "created": int(time.time()),
            "data": {"order_id": "ord_1", "idempotency_key": str(dispatch.idempotency_key)},
        }
    ).encode()
    header = signature_header(secrets=[SECRET], body=body)

    response = Client().post(
        "/webhooks/gateway/", body, content_type="application/json", HTTP_GATEWAY_SIGNATURE=header
    )

    assert response.status_code == 400
    assert response.json()["detail"] == "bad Gateway-Signature"
    prescription.refresh_from_db()
    assert prescription.status == "acknowledged"


def _order_event(dispatch: Dispatch, kind: str = "order.dispensed") -> bytes:
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": kind,
            "created": int(time.time()),
            "data": {"order_id": "ord_1", "idempotency_key": str(dispatch.idempotency_key)},
        }
    ).encode()


def _deliver_order_event(body: bytes, secret: str):  # type: ignore[no-untyped-def]
    return Client().post(
        "/webhooks/gateway/",
        body,
        content_type="application/json",
        HTTP_GATEWAY_SIGNATURE=signature_header(secrets=[secret], body=body),
    )


def test_an_order_event_signed_by_the_partner_holding_the_order_is_applied(east, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = services.dispatch_create(prescription_id=prescription.pk)
    Dispatch.objects.filter(pk=dispatch.pk).update(partner=east)
    services.dispatch_record_acknowledged(dispatch_id=dispatch.pk, order_id="ord_1")

    refused = _deliver_order_event(_order_event(dispatch), "sim-webhook-secret")  # the default's
    applied = _deliver_order_event(_order_event(dispatch), SECRET)

    assert refused.json()["detail"] == "bad Gateway-Signature"
    assert applied.json() == {"outcome": "applied"}
    prescription.refresh_from_db()
    assert prescription.status == "dispensed"


def test_an_unrouted_order_is_the_default_partners_even_when_its_row_is_gone(settings, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    settings.PARTNER_SECRETS = {
        "west": {"url": "http://127.0.0.1:9", "api_key": "k", "webhook_secret": "sim-webhook-secret"}
    }
    Partner.objects.create(code="west", name="West", countries=["US"])
    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = services.dispatch_create(prescription_id=prescription.pk)
    services.dispatch_record_acknowledged(dispatch_id=dispatch.pk, order_id="ord_1")
    Dispatch.objects.filter(pk=dispatch.pk).update(partner=None)
    Partner.objects.filter(code="gateway").delete()

    response = _deliver_order_event(_order_event(dispatch), "sim-webhook-secret")

    assert response.json() == {"outcome": "applied"}
    assert Partner.objects.filter(code="gateway").exists()  # made again (routing.default_partner_ensure)
