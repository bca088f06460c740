"""Outbound clinic webhooks: signed, retried, logged per attempt, delivered once per event."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from events import webhooks
from events.models import ClinicWebhookEndpoint, Event, OutboxTask, WebhookAttempt, WebhookDelivery
from prescriptions import services
from prescriptions.models import Status
from prescriptions.status_link import status_link_url
from tests.events.factories import ClinicWebhookEndpointFactory
from tests.events.receiver import receiver_start, signature_valid
from tests.outbox import owed_tasks
from tests.prescriptions.factories import scenario

pytestmark = pytest.mark.django_db

SECRET = "whsec_test_secret"


@pytest.fixture
def receiver():  # type: ignore[no-untyped-def]
    running = receiver_start()
    yield running
    running.stop()


@pytest.fixture
def prescription(formulary):  # type: ignore[no-untyped-def]
    return scenario()


@pytest.fixture
def endpoint(prescription, receiver) -> ClinicWebhookEndpoint:  # type: ignore[no-untyped-def]
    return ClinicWebhookEndpointFactory(clinic=prescription.clinic, url=receiver.url, secret=SECRET)


def rejected(prescription) -> Event:  # type: ignore[no-untyped-def]
    services.prescription_transition(
        prescription_id=prescription.pk,
        to=Status.REJECTED,
        event_type="prescription.rejected",
        payload={"checks": [{"code": "allergy", "severity": "block", "message": "Allergic to penicillin"}]},
    )
    return Event.objects.get(aggregate_id=prescription.pk, type="prescription.rejected")


def test_a_status_change_is_posted_to_the_clinic_signed_with_its_secret(prescription, endpoint, receiver):
    # given a rejection event
    event = rejected(prescription)
    # when the consumer queues it and the delivery runs
    delivery = webhooks.webhook_deliveries_create(event_id=event.pk)
    outcome = webhooks.webhook_deliver(delivery_id=delivery.pk)
    # then the clinic received one signed POST with the status and reasons
    assert outcome == "delivered"
    (received,) = receiver.received
    assert signature_valid(header=received.headers["scriptline-signature"], body=received.body, secret=SECRET)
    assert received.json == {
        "id": f"evt_{event.pk}",
        "type": "prescription.rejected",
        "created_at": event.created_at.isoformat(),
        "prescription": {
            "id": prescription.pk,
            "sequence": 2,
            "status": "rejected",
            "reason": "Allergic to penicillin",
            "check_results": [{"code": "allergy", "severity": "block", "message": "Allergic to penicillin"}],
            "tracking_number": "",
            "status_url": status_link_url(prescription=prescription),
        },
    }
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.DELIVERED, 1)
    assert list(WebhookAttempt.objects.values_list("status_code", "error")) == [(200, "")]


def test_the_payload_carries_no_patient_identifier(prescription, endpoint, receiver):
    event = rejected(prescription)
    delivery = webhooks.webhook_deliveries_create(event_id=event.pk)
    webhooks.webhook_deliver(delivery_id=delivery.pk)
    body = receiver.received[0].body.decode()
    patient = prescription.patient
    for identifier in (patient.family_name, patient.given_name, patient.nhs_number, str(patient.birth_date)):
        assert identifier
        assert identifier not in body
    assert '"patient"' not in body


def test_a_500_is_retried_and_every_attempt_is_logged(prescription, endpoint, receiver):
    # given a clinic that fails twice, then accepts
    receiver.statuses = [500, 503]
    delivery = webhooks.webhook_deliveries_create(event_id=rejected(prescription).pk)
    # when the task runs three times
    for _ in range(2):
        with pytest.raises(webhooks.WebhookRetry):
            webhooks.webhook_deliver(delivery_id=delivery.pk)
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == "delivered"
    # then each attempt is logged in order, and the body was the same each time
    assert list(WebhookAttempt.objects.order_by("pk").values_list("status_code", "error")) == [
        (500, "HTTP 500"),
        (503, "HTTP 503"),
        (200, ""),
    ]
    assert len({item.body for item in receiver.received}) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 3, "")


def test_an_unreachable_clinic_is_logged_as_an_error_without_a_status(prescription, receiver):
    endpoint = ClinicWebhookEndpointFactory(
        clinic=prescription.clinic, url="http://127.0.0.1:9/hooks", secret=SECRET
    )
    delivery = webhooks.webhook_deliveries_create(event_id=rejected(prescription).pk)
    with pytest.raises(webhooks.WebhookRetry):
        webhooks.webhook_deliver(delivery_id=delivery.pk)
    (attempt,) = WebhookAttempt.objects.all()
    assert (attempt.status_code, attempt.error) == (None, "ConnectionError")
    assert WebhookDelivery.objects.get().endpoint == endpoint


def test_a_delivery_still_failing_after_its_window_is_marked_failed_and_not_retried(
    prescription, endpoint, receiver
):
    receiver.statuses = [500]
    delivery = webhooks.webhook_deliveries_create(event_id=rejected(prescription).pk)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        window_started_at=timezone.now() - timedelta(hours=24, seconds=1)
    )
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == "failed"
    assert WebhookDelivery.objects.get().status == WebhookDelivery.Status.FAILED
    # a redelivered task does nothing more
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == "not-pending"
    assert len(receiver.received) == 1


def test_a_redelivered_event_queues_one_delivery(prescription, endpoint):
    event = rejected(prescription)
    first = webhooks.webhook_deliveries_create(event_id=event.pk)
    second = webhooks.webhook_deliveries_create(event_id=event.pk)
    assert first.pk == second.pk
    assert WebhookDelivery.objects.count() == 1
    assert owed_tasks() == [(webhooks.DELIVER_TASK, [first.pk])]


def test_a_clinic_without_an_endpoint_gets_no_delivery(prescription):
    assert webhooks.webhook_deliveries_create(event_id=rejected(prescription).pk) is None
    assert WebhookDelivery.objects.count() == 0


def test_deliveries_record_each_prescriptions_event_sequence(prescription, endpoint):
    services.prescription_cancel(clinic=None, prescription_id=prescription.pk, reason="Patient moved")
    for event in Event.objects.filter(aggregate_id=prescription.pk):
        webhooks.webhook_deliveries_create(event_id=event.pk)
    assert list(
        WebhookDelivery.objects.values_list("sequence", "payload__type", "payload__prescription__reason")
    ) == [
        (1, "prescription.received", ""),
        # The reason is not stored with the delivery: it is added as the POST is sent.
        (2, "prescription.cancelled", ""),
    ]
    cancelled = WebhookDelivery.objects.get(sequence=2)
    assert json.loads(webhooks.webhook_body(cancelled))["prescription"]["reason"] == "Patient moved"


def test_after_rotation_both_secrets_verify_during_the_grace_period_and_only_the_new_one_after(
    prescription, endpoint, receiver
):
    # given a rotated secret
    new_secret = webhooks.webhook_endpoint_rotate_secret(endpoint_id=endpoint.pk, grace=timedelta(hours=1))
    event = rejected(prescription)
    delivery = webhooks.webhook_deliveries_create(event_id=event.pk)
    webhooks.webhook_deliver(delivery_id=delivery.pk)
    during = receiver.received[-1]
    # when the grace period is over
    ClinicWebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        previous_secret_expires_at=timezone.now() - timedelta(seconds=1)
    )
    webhooks.webhook_delivery_resend(delivery_id=delivery.pk)
    webhooks.webhook_deliver(delivery_id=delivery.pk)
    after = receiver.received[-1]
    # then
    assert new_secret != SECRET
    header = during.headers["scriptline-signature"]
    assert header.count("v1=") == 2
    assert signature_valid(header=header, body=during.body, secret=new_secret)
    assert signature_valid(header=header, body=during.body, secret=SECRET)
    header = after.headers["scriptline-signature"]
    assert header.count("v1=") == 1
    assert signature_valid(header=header, body=after.body, secret=new_secret)
    assert not signature_valid(header=header, body=after.body, secret=SECRET)


def test_the_admin_resend_action_delivers_again_and_leaves_pending_ones_alone(
    prescription, endpoint, receiver, admin_client
):
    delivered = webhooks.webhook_deliveries_create(event_id=rejected(prescription).pk)
    webhooks.webhook_deliver(delivery_id=delivered.pk)
    received = Event.objects.get(aggregate_id=prescription.pk, type="prescription.received")
    pending = webhooks.webhook_deliveries_create(event_id=received.pk)
    OutboxTask.objects.all().delete()
    response = admin_client.post(
        "/admin/events/webhookdelivery/",
        {"action": "resend", "_selected_action": [delivered.pk, pending.pk]},
    )
    assert response.status_code == 302
    assert owed_tasks() == [(webhooks.DELIVER_TASK, [delivered.pk])]
    assert WebhookDelivery.objects.get(pk=delivered.pk).status == WebhookDelivery.Status.PENDING
    assert webhooks.webhook_deliver(delivery_id=delivered.pk) == "delivered"
    assert len(receiver.received) == 2


def test_the_admin_shows_a_deliverys_attempts(prescription, endpoint, receiver, admin_client):
    receiver.statuses = [502]
    delivery = webhooks.webhook_deliveries_create(event_id=rejected(prescription).pk)
    with pytest.raises(webhooks.WebhookRetry):
        webhooks.webhook_deliver(delivery_id=delivery.pk)
    response = admin_client.get(f"/admin/events/webhookdelivery/{delivery.pk}/change/")
    assert response.status_code == 200
    assert b"HTTP 502" in response.content


@pytest.mark.parametrize("retries", [0, 3, 20])
def test_backoff_grows_exponentially_with_jitter_and_stays_under_the_cap(retries, settings):
    settings.CLINIC_WEBHOOK_BACKOFF_SECONDS = 10
    settings.CLINIC_WEBHOOK_BACKOFF_MAX_SECONDS = 600
    ceiling = min(600, 10 * 2**retries)
    waits = [webhooks.backoff_seconds(retries) for _ in range(50)]
    assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
    assert len(set(waits)) > 1


def test_the_admin_delivery_list_costs_the_same_queries_for_one_delivery_or_many(
    formulary, receiver, admin_client
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def listed_queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get("/admin/events/webhookdelivery/").status_code == 200
        return len(captured)

    first = scenario()
    ClinicWebhookEndpointFactory(clinic=first.clinic, url=receiver.url, secret=SECRET)
    webhooks.webhook_deliveries_create(event_id=rejected(first).pk)
    one = listed_queries()
    for _ in range(4):
        more = scenario(clinic=first.clinic)
        webhooks.webhook_deliveries_create(event_id=rejected(more).pk)
    assert WebhookDelivery.objects.count() == 5
    assert listed_queries() == one


def test_every_status_a_prescription_can_reach_is_posted_to_the_clinic(settings):
    from prescriptions.models import Status as PrescriptionStatus

    subscribed = {
        event_type
        for event_type, consumers in settings.EVENT_CONSUMERS.items()
        if "events.tasks.webhook_on_prescription_event" in consumers
    }
    assert {f"prescription.{status}" for status in PrescriptionStatus.values} <= subscribed
