"""Problem details (RFC 9457): error pointers and the shape of every API error."""

from __future__ import annotations

import pytest
from rest_framework.exceptions import ErrorDetail

from api.problems import field_errors
from prescriptions.models import Prescription


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        pytest.param(
            {"patient": [ErrorDetail("No such patient.", code="invalid")]},
            [{"pointer": "#/patient", "detail": "No such patient."}],
            id="one-field",
        ),
        pytest.param(
            {"reason": ["This field is required.", "Too short."], "note": ["Too long."]},
            [
                {"pointer": "#/reason", "detail": "This field is required."},
                {"pointer": "#/reason", "detail": "Too short."},
                {"pointer": "#/note", "detail": "Too long."},
            ],
            id="one-entry-per-message-in-order",
        ),
        pytest.param(
            {"non_field_errors": ["Patient and prescriber disagree."]},
            [{"pointer": "#", "detail": "Patient and prescriber disagree."}],
            id="non-field-errors-point-at-the-whole-document",
        ),
        pytest.param(
            {"items": [{}, {"medication": ["Not on the formulary."], "days_supply": ["Too small."]}]},
            [
                {"pointer": "#/items/1/medication", "detail": "Not on the formulary."},
                {"pointer": "#/items/1/days_supply", "detail": "Too small."},
            ],
            id="list-of-items-skips-the-valid-ones",
        ),
        pytest.param(
            {"items": [{"medication": {"code": ["Required."], "system": ["Required."]}}]},
            [
                {"pointer": "#/items/0/medication/code", "detail": "Required."},
                {"pointer": "#/items/0/medication/system", "detail": "Required."},
            ],
            id="nested-object-inside-an-item",
        ),
        pytest.param(
            {"items": {"non_field_errors": ['Expected a list of items but got type "str".']}},
            [{"pointer": "#/items", "detail": 'Expected a list of items but got type "str".'}],
            id="non-field-errors-of-a-nested-serializer-point-at-it",
        ),
        pytest.param(
            {"tags": ["ok", {"name": ["Bad."]}]},
            [{"pointer": "#/tags", "detail": "ok"}, {"pointer": "#/tags/1/name", "detail": "Bad."}],
            id="mixed-list",
        ),
        pytest.param(
            ["Invalid data. Expected a dictionary, but got list."],
            [{"pointer": "#", "detail": "Invalid data. Expected a dictionary, but got list."}],
            id="top-level-list",
        ),
        pytest.param("Just wrong.", [{"pointer": "#", "detail": "Just wrong."}], id="bare-string"),
        pytest.param({}, [], id="nothing"),
    ],
)
def test_field_errors_flattens_drf_errors_into_json_pointers(detail, expected):
    assert field_errors(detail) == expected


def test_field_errors_returns_plain_strings_not_error_details():
    (error,) = field_errors({"patient": [ErrorDetail("No such patient.", code="invalid")]})

    assert type(error["detail"]) is str


@pytest.mark.django_db
def test_an_unknown_url_under_the_api_is_a_problem_json_404(clinic_a):
    response = clinic_a.api.get("/api/v1/no-such-thing/")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json() == {
        "type": "/problems/not-found",
        "title": "Not found",
        "status": 404,
        "detail": "No such resource.",
        "instance": "/api/v1/no-such-thing/",
    }


@pytest.mark.django_db
def test_an_unsupported_method_is_a_problem_json_405_and_changes_nothing(clinic_a, patient_a, paracetamol):
    response = clinic_a.api.put("/api/v1/prescriptions/", {"patient": patient_a.pk}, format="json")

    assert response.status_code == 405
    assert response["Content-Type"] == "application/problem+json"
    assert response["Allow"] == "GET, POST, HEAD, OPTIONS"
    assert response.json() == {
        "type": "/problems/method-not-allowed",
        "title": "Method not allowed",
        "status": 405,
        "detail": 'Method "PUT" not allowed.',
        "instance": "/api/v1/prescriptions/",
    }
    assert Prescription.objects.count() == 0


@pytest.mark.django_db
def test_a_missing_object_under_the_api_is_a_problem_json_404(clinic_a):
    response = clinic_a.api.get("/api/v1/prescriptions/987654/")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/not-found"
    assert response.json()["instance"] == "/api/v1/prescriptions/987654/"


def test_field_names_are_escaped_as_json_pointer_tokens() -> None:
    errors = field_errors({"a/b": ["bad"], "c~d": ["worse"]})

    assert errors == [
        {"pointer": "#/a~1b", "detail": "bad"},
        {"pointer": "#/c~0d", "detail": "worse"},
    ]
