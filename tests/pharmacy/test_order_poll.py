"""Orders the gateway went quiet about: asked about at the gateway (GET /orders/{id} on the
simulator, over real HTTP) and their status applied; raised to the operators when that fails."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from events.models import Event
from pharmacy import services
from pharmacy.models import Dispatch, OrderAlert
from prescriptions.models import Prescription, Status
from tests.pharmacy.factories import approved_prescription
from tests.processes import start_simulator, wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def walking_gateway():  # type: ignore[no-untyped-def]
    """A gateway that walks each order to delivered but loses every webhook on the way."""
    running = start_simulator(webhook_url="http://127.0.0.1:9/lost", step_delay=0.1)
    yield running
    running.stop()


@pytest.fixture
def gateway(walking_gateway, settings):  # type: ignore[no-untyped-def]
    settings.GATEWAY_URL = walking_gateway.url
    settings.GATEWAY_TIMEOUT_SECONDS = 2
    settings.ORDER_POLL_AFTER_SECONDS = 60
    settings.ORDER_POLL_INTERVAL_SECONDS = 600
    settings.ORDER_ESCALATE_AFTER_SECONDS = 3600
    walking_gateway.reset()
    walking_gateway.control(drop_next_webhooks=1000)
    return walking_gateway


def acknowledged_order(clinic, medication) -> Dispatch:  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic, medication)
    dispatch = services.dispatch_create(prescription_id=prescription.pk)
    assert services.dispatch_send(dispatch_id=dispatch.pk) == "acknowledged"
    return Dispatch.objects.get(pk=dispatch.pk)


def quiet_for(dispatch: Dispatch, seconds: int) -> None:
    Prescription.objects.filter(pk=dispatch.prescription_id).update(
        updated_at=timezone.now() - timedelta(seconds=seconds)
    )


def events_of(dispatch: Dispatch) -> list[str]:
    return list(
        Event.objects.filter(aggregate_id=dispatch.prescription_id)
        .order_by("sequence")
        .values_list("type", flat=True)
    )


def test_an_order_delivered_at_the_gateway_whose_webhooks_were_lost_is_polled_and_walked_to_delivered(
    gateway, clinic_a, paracetamol
):
    # Given an order the gateway delivered while every webhook was lost
    dispatch = acknowledged_order(clinic_a, paracetamol)
    wait_until(lambda: gateway.stats()["webhooks_dropped"] >= 3, seconds=20, what="the order walked on")
    quiet_for(dispatch, 120)

    # When the poll runs (twice: the second finds nothing due)
    first = services.orders_poll_stale()
    second = services.orders_poll_stale()

    # Then every step is recorded once, in order, with the tracking number; nothing alerted
    prescription = Prescription.objects.get(pk=dispatch.prescription_id)
    assert first == {"polled": 1, "advanced": 1, "alerted": 0}
    assert second == {"polled": 0, "advanced": 0, "alerted": 0}
    assert prescription.status == Status.DELIVERED
    assert prescription.tracking_number.startswith("SIM")
    assert events_of(dispatch)[-4:] == [
        "prescription.acknowledged",
        "prescription.dispensed",
        "prescription.shipped",
        "prescription.delivered",
    ]
    assert Dispatch.objects.get(pk=dispatch.pk).status_checked_at is not None
    assert not OrderAlert.objects.exists()


def test_an_order_that_has_not_been_quiet_long_enough_is_not_asked_about(gateway, clinic_a, paracetamol):
    dispatch = acknowledged_order(clinic_a, paracetamol)
    quiet_for(dispatch, 30)

    assert services.orders_poll_stale() == {"polled": 0, "advanced": 0, "alerted": 0}
    assert gateway.stats()["requests"] == 1  # only the order itself


def test_an_order_the_gateway_does_not_know_is_raised_to_the_operators_once(
    gateway, clinic_a, paracetamol, settings
):
    dispatch = acknowledged_order(clinic_a, paracetamol)
    Dispatch.objects.filter(pk=dispatch.pk).update(gateway_order_id="ord_lost_by_the_partner")
    quiet_for(dispatch, 120)

    services.orders_poll_stale()
    settings.ORDER_POLL_INTERVAL_SECONDS = 0  # asked again at once: still one open alert
    services.orders_poll_stale()

    alert = OrderAlert.objects.get()
    assert (alert.dispatch_id, alert.gateway_status, alert.resolved_at) == (dispatch.pk, "unknown", None)
    assert alert.reason == "The gateway has no such order."
    assert Prescription.objects.get(pk=dispatch.prescription_id).status == Status.ACKNOWLEDGED


def test_a_gateway_that_cannot_be_asked_raises_only_orders_quiet_past_the_escalation_time(
    gateway, clinic_a, paracetamol
):
    recent, old = acknowledged_order(clinic_a, paracetamol), acknowledged_order(clinic_a, paracetamol)
    quiet_for(recent, 120)
    quiet_for(old, 7200)
    gateway.control(down=True)

    report = services.orders_poll_stale()

    assert report == {"polled": 2, "advanced": 0, "alerted": 1, "unanswered": 1}
    assert list(OrderAlert.objects.values_list("dispatch_id", flat=True)) == [old.pk]
    assert OrderAlert.objects.get().reason.startswith("No progress, and the gateway cannot be asked")


def test_operators_see_open_order_alerts_in_the_admin(gateway, clinic_a, paracetamol, admin_client):
    dispatch = acknowledged_order(clinic_a, paracetamol)
    OrderAlert.objects.create(dispatch=dispatch, reason="No progress at the gateway (it says shipped).")

    response = admin_client.get("/admin/pharmacy/orderalert/?resolved_at__isnull=True")

    assert response.status_code == 200
    assert "No progress at the gateway (it says shipped)." in response.content.decode()


def test_the_poll_runs_from_beat(settings):
    assert settings.CELERY_BEAT_SCHEDULE["orders-poll-stale"]["task"] == "pharmacy.tasks.orders_poll_stale"
