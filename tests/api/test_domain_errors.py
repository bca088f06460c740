"""Domain errors become problem+json in one place (api.problems), and a refused API request
keeps what it recorded only when the refusal says so (common.errors, the one rule)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group
from django.http import HttpResponse
from django.test import RequestFactory
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.tenancy import TenantTransactionMiddleware
from api.problems import PROBLEM_CONTENT_TYPE
from common.errors import Conflict, InvalidInput, NotAllowed, NotFound

pytestmark = pytest.mark.django_db


class RefusingApi(APIView):
    """An API view whose service writes a row, then refuses with `error`."""

    authentication_classes: list[type] = []
    permission_classes: list[type] = []
    error: Exception = Exception()

    def post(self, request: Request) -> Response:
        Group.objects.create(name="written before the refusal")
        raise self.error


def answer_to(error: Exception, path: str = "/api/v1/things/7/") -> HttpResponse:
    response = RefusingApi.as_view(error=error)(RequestFactory().post(path))
    response.render()
    return response


@pytest.mark.parametrize(
    ("error", "status", "title"),
    [
        (InvalidInput("A reason is required.", code="reason-required"), 400, "Bad request"),
        (NotAllowed("Not yours.", code="own-prescription"), 403, "Forbidden"),
        (NotFound("No such prescription.", code="not-found"), 404, "Not found"),
        (Conflict("Too late.", code="not-cancellable"), 409, "Conflict"),
    ],
)
def test_each_kind_of_refusal_answers_with_its_status_as_problem_json(error, status, title):
    response = answer_to(error)

    assert response.status_code == status
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert json.loads(response.content) == {
        "type": f"/problems/{error.code}",
        "title": title,
        "status": status,
        "detail": error.detail,
        "instance": "/api/v1/things/7/",
    }


def test_a_refusal_naming_fields_lists_them_as_json_pointers():
    response = answer_to(
        InvalidInput("Decide approved or rejected.", code="bad-decision", fields=["decision"])
    )

    assert json.loads(response.content)["errors"] == [
        {"pointer": "#/decision", "detail": "Decide approved or rejected."}
    ]


def test_a_subclass_answers_with_the_status_of_its_kind():
    class PrescriptionLocked(Conflict):
        pass

    assert answer_to(PrescriptionLocked("Locked.", code="locked")).status_code == 409


@pytest.mark.parametrize(("keeps_changes", "kept"), [(False, 0), (True, 1)])
def test_a_refused_api_request_keeps_its_writes_only_when_the_refusal_says_so(keeps_changes, kept):
    error = Conflict(
        "Too late; our staff will review it.", code="not-cancellable", keeps_changes=keeps_changes
    )
    middleware = TenantTransactionMiddleware(RefusingApi.as_view(error=error))

    response = middleware(RequestFactory().post("/api/v1/prescriptions/1/cancel/"))

    assert response.status_code == 409
    assert Group.objects.filter(name="written before the refusal").count() == kept
