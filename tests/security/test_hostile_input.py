"""A corpus of hostile bodies and headers against every POST endpoint: always a 4xx, never a 5xx,
and on the API always problem+json. Also the input limits: list lengths and strict dates."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from drf_spectacular.generators import SchemaGenerator

from common.signing import signature_header
from events.models import Event
from patients.models import Allergy, IdempotencyKey, Patient
from tests.conftest import prescription_body
from tests.prescriptions.factories import scenario

pytestmark = pytest.mark.django_db

DEEP = 100_000


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _patient(**overrides: object) -> dict:
    return {"given_name": "Ann", "family_name": "Example", "birth_date": "1980-01-01", **overrides}


# Raw bodies: any endpoint must refuse each of them.
RAW_BODIES = {
    "deep arrays": b"[" * DEEP + b"]" * DEEP,
    "deep objects": _nested(DEEP).encode(),
    "just past the depth limit": _nested(33).encode(),
    "NUL in a value": json.dumps(_patient(given_name="An\x00n")).encode(),
    "NUL in a key": b'{"given\\u0000name": "Ann"}',
    "NaN": b'{"quantity": NaN}',
    "Infinity": b'{"quantity": Infinity}',
    "a float too large": b'{"quantity": 1e999}',
    "a 5000-digit integer": b'{"quantity": ' + b"9" * 5000 + b"}",
    "not UTF-8": b'{"given_name": "\xff\xfe"}',
    "not JSON": b"given_name=Ann",
    "empty": b"",
    "a bare string": b'"hello"',
    "null": b"null",
    "an array": b"[1, 2, 3]",
    "unicode digits in a date": json.dumps(_patient(birth_date="１９８０-０１-０１")).encode(),
}


@pytest.fixture
def prescription_id(clinic_a, formulary):  # type: ignore[no-untyped-def]
    return scenario(clinic=clinic_a.clinic, prescriber_object=clinic_a.prescriber).pk


def _api_endpoints(prescription_id: int) -> list[str]:
    return [
        "/api/v1/patients/",
        "/api/v1/prescriptions/",
        f"/api/v1/prescriptions/{prescription_id}/cancel/",
    ]


def test_the_corpus_covers_every_post_operation_of_the_api():
    schema = SchemaGenerator().get_schema(request=None, public=True)

    posts = sorted(path for path, operations in schema["paths"].items() if "post" in operations)

    assert posts == ["/api/v1/patients/", "/api/v1/prescriptions/", "/api/v1/prescriptions/{id}/cancel/"]


@pytest.mark.parametrize("name", sorted(RAW_BODIES))
def test_every_api_post_refuses_a_hostile_body_with_a_4xx_problem(clinic_a, prescription_id, name):
    before = (Patient.objects.count(), IdempotencyKey.objects.count(), Event.objects.count())
    for path in _api_endpoints(prescription_id):
        response = clinic_a.api.generic(
            "POST", path, RAW_BODIES[name], content_type="application/json", HTTP_IDEMPOTENCY_KEY=f"k-{name}"
        )

        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert response["Content-Type"] == "application/problem+json", path
    assert (Patient.objects.count(), IdempotencyKey.objects.count(), Event.objects.count()) == before


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "application/json"])
@pytest.mark.parametrize("name", sorted(RAW_BODIES))
def test_the_token_endpoint_refuses_a_hostile_body_with_a_4xx(client, name, content_type):
    response = client.generic("POST", "/oauth/token/", RAW_BODIES[name], content_type=content_type)

    assert 400 <= response.status_code < 500, response.status_code


@pytest.mark.parametrize("name", sorted(RAW_BODIES))
def test_the_fhir_message_endpoint_refuses_a_hostile_body_with_a_4xx(clinic_a, name):
    before = (Patient.objects.count(), IdempotencyKey.objects.count(), Event.objects.count())

    response = clinic_a.api.generic(
        "POST", "/fhir/R4/$process-message", RAW_BODIES[name], content_type="application/fhir+json"
    )

    assert 400 <= response.status_code < 500, response.status_code
    assert response.json()["resourceType"] == "OperationOutcome"
    assert (Patient.objects.count(), IdempotencyKey.objects.count(), Event.objects.count()) == before


@pytest.mark.parametrize("name", sorted(RAW_BODIES))
@pytest.mark.parametrize(
    ("path", "header", "secret"),
    [
        ("/webhooks/gateway/", "HTTP_GATEWAY_SIGNATURE", "GATEWAY_WEBHOOK_SECRET"),
        ("/webhooks/stripe/", "HTTP_STRIPE_SIGNATURE", "STRIPE_WEBHOOK_SECRET"),
    ],
)
def test_a_correctly_signed_hostile_webhook_body_is_a_4xx(client, name, path, header, secret):
    body = RAW_BODIES[name]
    signed = signature_header(secrets=[getattr(settings, secret)], body=body)

    response = client.generic("POST", path, body, content_type="application/json", **{header: signed})

    assert 400 <= response.status_code < 500, response.status_code


HOSTILE_HEADERS = {
    "a 400-digit timestamp": "t=" + "9" * 400 + ",v1=" + "a" * 64,
    "a 5000-digit timestamp": "t=" + "9" * 5000 + ",v1=" + "a" * 64,
    "a non-ASCII signature": "t=1700000000,v1=é" + "a" * 63,
    "full-width timestamp digits": "t=１７００００００００,v1=" + "a" * 64,
    "NUL": "t=1700000000\x00,v1=" + "a" * 64,
    "no parts": ",,,,",
    "only equals signs": "=" * 5000,
    "a huge header": "v1=" + "a" * 100_000,
    "a negative timestamp": "t=-1,v1=" + "a" * 64,
    "empty": "",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_HEADERS))
@pytest.mark.parametrize(
    ("path", "header"),
    [("/webhooks/gateway/", "HTTP_GATEWAY_SIGNATURE"), ("/webhooks/stripe/", "HTTP_STRIPE_SIGNATURE")],
)
def test_a_webhook_signature_header_of_any_shape_is_a_4xx(client, name, path, header):
    body = json.dumps({"id": "evt_1", "type": "order.dispensed", "data": {"object": {}}}).encode()

    response = client.generic(
        "POST", path, body, content_type="application/json", **{header: HOSTILE_HEADERS[name]}
    )

    assert 400 <= response.status_code < 500, response.status_code


def test_a_signed_webhook_with_an_overlong_event_id_is_a_4xx_and_stores_nothing(client):
    from billing.models import StripeEvent
    from pharmacy.models import GatewayWebhookEvent

    gateway_body = json.dumps({"id": "e" * 500, "type": "order.dispensed", "data": {"order_id": "o" * 500}})
    stripe_body = json.dumps(
        {"id": "evt_" + "e" * 500, "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1"}}}
    )
    gateway_header = signature_header(secrets=[settings.GATEWAY_WEBHOOK_SECRET], body=gateway_body.encode())
    stripe_header = signature_header(secrets=[settings.STRIPE_WEBHOOK_SECRET], body=stripe_body.encode())

    gateway = client.post(
        "/webhooks/gateway/",
        gateway_body,
        content_type="application/json",
        HTTP_GATEWAY_SIGNATURE=gateway_header,
    )
    stripe = client.post(
        "/webhooks/stripe/", stripe_body, content_type="application/json", HTTP_STRIPE_SIGNATURE=stripe_header
    )

    assert (gateway.status_code, stripe.status_code) == (400, 400)
    assert (GatewayWebhookEvent.objects.count(), StripeEvent.objects.count()) == (0, 0)


# --- Limits on what one request may write --------------------------------------------------


def test_a_patient_with_more_allergies_or_medicines_than_allowed_is_refused(clinic_a):
    many_allergies = _patient(allergies=[{"substance": f"s{n}"} for n in range(51)])
    many_medicines = _patient(current_medications=[{"name": f"m{n}"} for n in range(51)])
    thousands = _patient(allergies=[{"substance": f"s{n}"} for n in range(5000)])

    responses = [
        clinic_a.api.post("/api/v1/patients/", body, format="json", HTTP_IDEMPOTENCY_KEY=f"many-{n}")
        for n, body in enumerate([many_allergies, many_medicines, thousands])
    ]

    assert [response.status_code for response in responses] == [400, 400, 400]
    assert responses[0].json()["errors"][0]["pointer"] == "#/allergies"
    assert responses[1].json()["errors"][0]["pointer"] == "#/current_medications"
    assert (Patient.objects.count(), Allergy.objects.count()) == (0, 0)


def test_fifty_allergies_are_accepted(clinic_a):
    body = _patient(allergies=[{"substance": f"s{n}"} for n in range(50)])

    response = clinic_a.api.post("/api/v1/patients/", body, format="json", HTTP_IDEMPOTENCY_KEY="fifty")

    assert response.status_code == 201
    assert Allergy.objects.count() == 50


def test_a_prescription_with_more_items_than_allowed_is_refused(clinic_a, paracetamol):
    patient = clinic_a.api.post("/api/v1/patients/", _patient(), format="json", HTTP_IDEMPOTENCY_KEY="p")
    body = prescription_body(patient.json()["id"], clinic_a.prescriber.pk, paracetamol)
    body["items"] = body["items"] * 21

    response = clinic_a.api.post("/api/v1/prescriptions/", body, format="json", HTTP_IDEMPOTENCY_KEY="rx")

    assert response.status_code == 400
    assert response.json()["errors"][0]["pointer"] == "#/items"


@pytest.mark.parametrize(
    "birth_date",
    [
        "1983-W28",
        "1983-W28-1",
        "1983-192",
        "19830711",
        "１９８３-０７-１１",
        "1983-07-1١",
        "0001-01-01",
        "1899-12-31",
        "1983-02-30",
        "1983-7-11",
        " 1983-07-11",
        "1983-07-11T00:00",
        "+1983-07-11",
        "98765-01-01",
    ],
)
def test_a_date_that_is_not_a_plain_iso_calendar_date_in_range_is_refused(clinic_a, birth_date):
    response = clinic_a.api.post(
        "/api/v1/patients/", _patient(birth_date=birth_date), format="json", HTTP_IDEMPOTENCY_KEY="d"
    )

    assert response.status_code == 400
    assert [error["pointer"] for error in response.json()["errors"]] == ["#/birth_date"]
    assert Patient.objects.count() == 0


@pytest.mark.parametrize("started_on", ["1983-W28", "１９８３-０７-１１", "0001-01-01"])
def test_a_medicine_start_date_is_a_strict_calendar_date_too(clinic_a, started_on):
    body = _patient(current_medications=[{"name": "Sertraline 50mg tablets", "started_on": started_on}])

    response = clinic_a.api.post("/api/v1/patients/", body, format="json", HTTP_IDEMPOTENCY_KEY="d")

    assert response.status_code == 400
    assert [error["pointer"] for error in response.json()["errors"]] == ["#/current_medications/0/started_on"]


def test_a_plain_calendar_date_is_accepted(clinic_a):
    response = clinic_a.api.post(
        "/api/v1/patients/", _patient(birth_date="1983-07-11"), format="json", HTTP_IDEMPOTENCY_KEY="d"
    )

    assert response.status_code == 201
    assert response.json()["birth_date"] == "1983-07-11"
