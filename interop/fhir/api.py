"""/fhir/R4: `$process-message` (NHS EPS prescription-order and -update) and MedicationRequest
reads, for clinic systems that speak FHIR rather than our REST dialect.

The same OAuth2 client credentials, scopes, rate limit and clinic scoping (row-level security
included) as /api/v1; every refusal is an OperationOutcome with one issue per problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import HasResourceScope, IsClinicClient, clinic_of, principal_of
from accounts.idempotency import idempotent_on
from api.problems import Problem, status_of
from common.errors import Conflict, DomainError, InvalidInput, NotAllowed, NotFound
from interop.fhir import intake, resources, validation
from interop.fhir.outcome import FHIR_CONTENT_TYPE, Issue, MessageInvalid, operation_outcome
from interop.models import ReceivedOrder
from pharmacy.fhir.eps import model as eps
from prescriptions.models import Prescription
from saga import cancellation

ISSUE_CODE_OF_STATUS = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "duplicate",
    429: "throttled",
}
ISSUE_CODE_OF_DOMAIN_ERROR: dict[type[DomainError], str] = {
    InvalidInput: "invalid",
    NotAllowed: "forbidden",
    NotFound: "not-found",
    Conflict: "business-rule",
}
RESOURCE_ID = re.compile(r"^(\d{1,18})-(\d{1,4})$")
SEARCH_VALUE = re.compile(r"^[\x21-\x7e]{1,200}$")
MAX_SEARCH_RESULTS = 100


class FhirJsonRenderer(JSONRenderer):
    media_type = FHIR_CONTENT_TYPE
    format = "fhir"


class FhirJsonParser(BaseParser):
    """application/fhir+json, read up to DATA_UPLOAD_MAX_MEMORY_SIZE and checked for depth."""

    media_type = FHIR_CONTENT_TYPE

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise Problem(
                status_code=413, slug="request-too-large", detail=f"The body is over {limit} bytes."
            )
        return validation.parse(raw)


class AlwaysFhir(BaseContentNegotiation):
    """Answer FHIR JSON whatever the Accept header says (FHIR clients send several forms)."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(
            (parser for parser in parsers if request.content_type.startswith(parser.media_type)), None
        )

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


def outcome_response(status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> Response:
    return Response(operation_outcome(issues), status=status, headers=headers)


def fhir_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, MessageInvalid):
        return outcome_response(400, exc.issues)
    if isinstance(exc, DomainError):
        code = next(
            (
                ISSUE_CODE_OF_DOMAIN_ERROR[kind]
                for kind in type(exc).__mro__
                if kind in ISSUE_CODE_OF_DOMAIN_ERROR
            ),
            "invalid",
        )
        response = outcome_response(status_of(exc), [Issue(code, "", exc.detail)])
        # Read by the request transaction (accounts.tenancy), as for the REST API.
        response.keeps_changes = exc.keeps_changes  # type: ignore[attr-defined]  # an attribute of our own
        return response
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None
    headers: dict[str, str] = dict(getattr(exc, "headers", None) or {})
    if auth_header := getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = auth_header
    if wait := getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(wait))
    code = ISSUE_CODE_OF_STATUS.get(exc.status_code, "exception")
    return outcome_response(exc.status_code, [Issue(code, "", str(exc.detail))], headers)


class FhirApiView(APIView):
    permission_classes = [IsClinicClient, HasResourceScope]
    required_scopes = ["prescriptions"]
    renderer_classes = [FhirJsonRenderer]
    parser_classes = [FhirJsonParser]
    content_negotiation_class = AlwaysFhir

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Response | None]:
        return fhir_exception_handler


def message_key(request: Request) -> str:
    return f"fhir-message:{request.data['identifier']['value']}"


def _prescriptions(clinic: Any) -> QuerySet[Prescription]:
    return (
        Prescription.objects.filter(clinic=clinic)
        .select_related("prescriber", "received_order")
        .prefetch_related("items__medication", "off_formulary_items")
    )


class ProcessMessageApi(FhirApiView):
    """POST a prescription-order or prescription-order-update message Bundle."""

    @extend_schema(exclude=True)
    def post(self, request: Request) -> Response:
        if not (request.content_type or "").startswith(FHIR_CONTENT_TYPE):
            raise exceptions.UnsupportedMediaType(
                request.content_type or "none", detail=f"Send the message as {FHIR_CONTENT_TYPE}."
            )
        if int(request.META.get("CONTENT_LENGTH") or 0) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            raise Problem(status_code=413, slug="request-too-large", detail="The body is too large.")
        bundle = request.data
        event = validation.check_bundle(bundle)
        return self.process(request, bundle, event)

    @idempotent_on(message_key)
    def process(self, request: Request, bundle: dict[str, Any], event: str) -> Response:
        clinic = clinic_of(request)
        actor = f"client:{principal_of(request).client_id}"
        if event == validation.ORDER:
            prescription_id = intake.order_receive(clinic=clinic, bundle=bundle, actor=actor).pk
        else:
            prescription_id, reason = intake.order_cancel_target(clinic=clinic, bundle=bundle)
            cancellation.prescription_cancel_request(
                clinic=clinic, prescription_id=prescription_id, reason=reason, actor=actor
            )
        prescription = _prescriptions(clinic).get(pk=prescription_id)
        body = resources.response_message(
            request_message_id=str(bundle["identifier"]["value"]), prescription=prescription
        )
        return Response(body, status=200)


class MedicationRequestDetailApi(FhirApiView):
    @extend_schema(exclude=True)
    def get(self, request: Request, resource_id: str) -> Response:
        match = RESOURCE_ID.match(resource_id)
        prescription = _prescriptions(clinic_of(request)).filter(pk=int(match[1])).first() if match else None
        found = resources.medication_requests(prescription, {int(match[2])}) if prescription and match else []
        if not found:
            # The same answer for "absent" and "another clinic's".
            raise NotFound(f"No MedicationRequest/{resource_id[:40]}.", code="not-found")
        return Response(found[0])


class MedicationRequestSearchApi(FhirApiView):
    """`?identifier=[system|]value`: an item number (every item's, as the clinic sent it), or the
    prescription's short-form ID (prescription-order-number system: all its items)."""

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        system, value = self._identifier(request)
        orders = ReceivedOrder.objects.filter(clinic=clinic_of(request))
        by_item = Q(item_numbers__contains=[value])
        by_prescription = Q(short_form_id=value)
        if system == eps.PRESCRIPTION_ORDER_ITEM_NUMBER_SYSTEM:
            orders = orders.filter(by_item)
        elif system == eps.PRESCRIPTION_ORDER_NUMBER_SYSTEM:
            orders = orders.filter(by_prescription)
        elif system is None:
            orders = orders.filter(by_item | by_prescription)
        else:
            orders = orders.none()
        wanted = {order["prescription_id"]: order for order in orders.values()[:MAX_SEARCH_RESULTS]}
        found: list[dict[str, Any]] = []
        for prescription in _prescriptions(clinic_of(request)).filter(pk__in=list(wanted)).order_by("pk"):
            order = wanted[prescription.pk]
            whole = order["short_form_id"] == value and system != eps.PRESCRIPTION_ORDER_ITEM_NUMBER_SYSTEM
            lines = None if whole else {order["item_numbers"].index(value) + 1}
            found.extend(resources.medication_requests(prescription, lines))
        return Response(resources.searchset(found))

    @staticmethod
    def _identifier(request: Request) -> tuple[str | None, str]:
        given = request.query_params.get("identifier", "")
        system, bar, value = given.rpartition("|")
        if not SEARCH_VALUE.match(value) or len(system) > 200 or "\x00" in system:
            raise MessageInvalid(
                [
                    Issue(
                        "required" if not given else "value",
                        "identifier",
                        "Search by identifier=[system|]value (1 to 200 printable characters).",
                    )
                ]
            )
        return (system if bar else None), value


def fhir_not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """Anything else under /fhir/R4: an OperationOutcome, not the API's problem+json."""
    body = operation_outcome([Issue("not-supported", "", "This FHIR server has no such interaction.")])
    return JsonResponse(body, status=404, content_type=FHIR_CONTENT_TYPE)
