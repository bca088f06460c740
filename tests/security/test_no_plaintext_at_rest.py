"""A journey through the API with marker values leaves none of them in any plaintext column.

Every text, varchar, json and jsonb column of every table is searched (information_schema),
so a new table or column that copies an identifier or a note in clear fails here.
"""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from common.signing import signature_header
from tests.conftest import prescription_body

pytestmark = pytest.mark.django_db

MARKERS = {
    "given_name": "Zqgivenmarker",
    "family_name": "Zqfamilymarker",
    "birth_date": "1957-03-14",
    "nhs_number": "7316240954",
    "address_line": "12 Zqaddressmarker Street",
    "city": "Zqcitymarker",
    "region": "Zqregionmarker",
    "postal_code": "ZQ9 9MK",
    "email": "zq.emailmarker@example.invalid",
    "phone": "+44 7700 900457",
}
NOTE = "Zqnotemarker: lives alone, carer visits Tuesdays"
JUSTIFICATION = "Zqjustificationmarker after Zqfamilymarker's review"
REACTION = "Zqreactionmarker swelling"
SEARCHED = [
    *MARKERS.values(),
    "7700900457",
    NOTE.split(":")[0],
    JUSTIFICATION.split(" ")[0],
    REACTION.split(" ")[0],
]


def _columns() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.table_name, c.column_name
            FROM information_schema.columns c
            JOIN information_schema.tables t USING (table_schema, table_name)
            WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
              AND c.data_type IN ('text', 'character varying', 'json', 'jsonb', 'character')
            ORDER BY 1, 2
            """
        )
        return cursor.fetchall()


def _plaintext_hits() -> list[tuple[str, str, str]]:
    hits = []
    with connection.cursor() as cursor:
        for table, column in _columns():
            for marker in SEARCHED:
                cursor.execute(
                    f'SELECT 1 FROM "{table}" WHERE "{column}"::text ILIKE %s LIMIT 1',  # noqa: S608
                    [f"%{marker}%"],
                )
                if cursor.fetchone():
                    hits.append((table, column, marker))
    return hits


def test_a_journey_with_markers_leaves_no_identifier_or_note_in_any_plaintext_column(clinic_a, paracetamol):
    patient_body = {
        **MARKERS,
        "sex": "female",
        "allergies": [{"substance": "penicillin", "reaction": REACTION}],
        "current_medications": [{"name": "Sertraline 50mg tablets", "code": "321949006"}],
    }
    created = clinic_a.api.post("/api/v1/patients/", patient_body, format="json", HTTP_IDEMPOTENCY_KEY="zq-p")
    replayed = clinic_a.api.post(
        "/api/v1/patients/", patient_body, format="json", HTTP_IDEMPOTENCY_KEY="zq-p"
    )
    body = prescription_body(
        created.json()["id"],
        clinic_a.prescriber.pk,
        paracetamol,
        note=NOTE,
        clinical_justification=JUSTIFICATION,
    )
    prescribed = clinic_a.api.post(
        "/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="zq-rx"
    )
    prescribed_again = clinic_a.api.post(
        "/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="zq-rx"
    )
    read_back = clinic_a.api.get(f"/api/v1/prescriptions/{prescribed.json()['id']}/")

    assert (created.status_code, replayed.status_code) == (201, 201)
    assert replayed["Idempotent-Replayed"] == "true"
    assert replayed.json() == created.json()
    assert created.json()["family_name"] == MARKERS["family_name"]
    assert created.json()["allergies"][0]["reaction"] == REACTION
    assert (prescribed.status_code, prescribed_again.status_code) == (201, 201)
    assert prescribed_again.json() == prescribed.json()
    assert (read_back.json()["note"], read_back.json()["clinical_justification"]) == (NOTE, JUSTIFICATION)
    assert len(_columns()) > 100
    assert _plaintext_hits() == []


def test_the_search_finds_a_marker_written_in_clear(clinic_a):
    """The search itself works: a plaintext copy would be found."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE patients_clinic SET name = %s WHERE id = %s", [MARKERS["city"], clinic_a.clinic.pk]
        )

    assert ("patients_clinic", "name", MARKERS["city"]) in _plaintext_hits()


CANCEL_REASON = "Zqcancelmarker: Zqfamilymarker moved abroad"
REVIEW_REASON = "Zqreviewmarker: interacts with her warfarin"
GATEWAY_REASON = "Zqgatewaymarker: wrong strength for Zqfamilymarker"
PHARMACY_REASON = "Zqpharmacymarker: allergy noted on Zqfamilymarker's record"
REASONS = [
    CANCEL_REASON.split(":")[0],
    REVIEW_REASON.split(":")[0],
    GATEWAY_REASON.split(":")[0],
    PHARMACY_REASON.split(":")[0],
]


def _reason_hits() -> list[tuple[str, str, str]]:
    hits = []
    with connection.cursor() as cursor:
        for table, column in _columns():
            for marker in REASONS:
                cursor.execute(
                    f'SELECT 1 FROM "{table}" WHERE "{column}"::text ILIKE %s LIMIT 1',  # noqa: S608
                    [f"%{marker}%"],
                )
                if cursor.fetchone():
                    hits.append((table, column, marker))
    return hits


def test_cancellation_and_review_reasons_stay_out_of_events_and_stored_webhooks(
    clinic_a, paracetamol, django_capture_on_commit_callbacks
):
    """A clinic's cancellation (direct, and at the pharmacy, refused), a pharmacist's rejection:
    none of the reasons is in clear in any table, event payloads and stored clinic webhooks
    included; the webhook carries the reason only on its way to the clinic."""
    from billing.models import CancellationRequest
    from events.models import ClinicWebhookEndpoint, Event, WebhookDelivery
    from events.webhooks import webhook_body, webhook_deliveries_create
    from pharmacy import services as pharmacy
    from pharmacy.gateway import OrderAlreadyDispensed
    from pharmacy.models import Dispatch, GatewayCancellation
    from prescriptions import services as prescriptions
    from prescriptions.models import PharmacistReview, Status
    from saga import tasks as saga_tasks
    from tests.pharmacy.factories import force_status
    from tests.prescriptions.factories import scenario
    from tests.support.factories import pharmacist_create

    class DispensedGateway:
        def order_cancel(self, *, order_id: str, idempotency_key: str) -> None:
            raise OrderAlreadyDispensed("The order is already dispensed.")

    ClinicWebhookEndpoint.objects.create(
        clinic=clinic_a.clinic, url="https://clinic.example/hook", secret="s" * 32
    )
    direct, reviewed, at_pharmacy, refused_by_pharmacy = (scenario(clinic=clinic_a.clinic) for _ in range(4))
    cancelled = clinic_a.api.post(
        f"/api/v1/prescriptions/{direct.pk}/cancel/", {"reason": CANCEL_REASON}, format="json"
    )
    force_status(reviewed, Status.AWAITING_PHARMACIST)
    prescriptions.prescription_review(
        prescription_id=reviewed.pk, pharmacist=pharmacist_create(), decision="rejected", reason=REVIEW_REASON
    )
    force_status(at_pharmacy, Status.ACKNOWLEDGED)
    Dispatch.objects.create(
        prescription=at_pharmacy, status=Dispatch.Status.ACKNOWLEDGED, gateway_order_id="o-1"
    )
    with django_capture_on_commit_callbacks(execute=False):
        accepted = clinic_a.api.post(
            f"/api/v1/prescriptions/{at_pharmacy.pk}/cancel/", {"reason": GATEWAY_REASON}, format="json"
        )
    outcome = pharmacy.gateway_cancellation_send(
        cancellation_id=GatewayCancellation.objects.get().pk, gateway=DispensedGateway()
    )
    force_status(refused_by_pharmacy, Status.ACKNOWLEDGED)
    Dispatch.objects.create(
        prescription=refused_by_pharmacy, status=Dispatch.Status.ACKNOWLEDGED, gateway_order_id="o-2"
    )
    rejection_body = json.dumps(
        {"id": "evt_zq", "type": "order.rejected", "data": {"order_id": "o-2", "reason": PHARMACY_REASON}}
    ).encode()
    rejected_by_pharmacy = Client().post(
        "/webhooks/gateway/",
        rejection_body,
        content_type="application/json",
        HTTP_GATEWAY_SIGNATURE=signature_header(
            secrets=[settings.GATEWAY_WEBHOOK_SECRET], body=rejection_body
        ),
    )
    refused = Event.objects.get(aggregate_id=at_pharmacy.pk, type="prescription.cancellation_refused")
    saga_tasks.cancellation_request_on_refused(refused.pk)
    for event in Event.objects.filter(clinic_id=clinic_a.clinic.pk, aggregate_type="prescription"):
        webhook_deliveries_create(event_id=event.pk)
    rejection = WebhookDelivery.objects.get(event__type="prescription.pharmacist_rejected")
    cancellation = WebhookDelivery.objects.get(event__type="prescription.cancelled")

    assert (cancelled.status_code, accepted.status_code, outcome) == (200, 202, "refused")
    assert rejected_by_pharmacy.status_code == 200
    refused_by_pharmacy.refresh_from_db()
    assert refused_by_pharmacy.status_reason == PHARMACY_REASON
    assert PharmacistReview.objects.get().reason == REVIEW_REASON
    assert GatewayCancellation.objects.get().reason == GATEWAY_REASON
    assert CancellationRequest.objects.get().reason == GATEWAY_REASON
    # Delivered to the clinic whose data it is: the reason is in the bytes sent, not the row.
    assert REVIEW_REASON in webhook_body(rejection).decode()
    assert CANCEL_REASON in webhook_body(cancellation).decode()
    assert _reason_hits() == []
