"""RFC 9457 problem details for every API error: the one place errors become HTTP.

DRF's exception handler is replaced so that validation errors list every invalid field as a
JSON pointer, and every other error (401, 403, 404, 405, 409, 413, 415, 422, 429) has the
same shape. Services raise domain errors (common.errors); `STATUS` below is the only mapping
from a kind of refusal to a status code. `Problem` is for the HTTP layer's own refusals
(an Idempotency-Key header, a query string), never raised by a service.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from common.errors import Conflict, DomainError, InvalidInput, NotAllowed, NotFound

PROBLEM_CONTENT_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Server error",
}

# Each kind of domain refusal and the status it answers with.
STATUS: dict[type[DomainError], int] = {
    InvalidInput: 400,
    NotAllowed: 403,
    NotFound: 404,
    Conflict: 409,
}


class Problem(exceptions.APIException):
    """A refusal by the HTTP layer itself, with its own status, type slug and headers."""

    def __init__(
        self,
        *,
        status_code: int,
        slug: str,
        detail: str,
        title: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail=detail)
        self.status_code = status_code
        self.slug = slug
        self.title = title or _TITLES.get(status_code, "Error")
        self.headers = headers or {}


def status_of(error: DomainError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400


def problem_body(
    *, status_code: int, slug: str, detail: str, instance: str, title: str | None = None
) -> dict[str, Any]:
    return {
        "type": f"/problems/{slug}",
        "title": title or _TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
        "instance": instance,
    }


def domain_error_body(error: DomainError, *, instance: str) -> dict[str, Any]:
    body = problem_body(status_code=status_of(error), slug=error.code, detail=error.detail, instance=instance)
    body.update({key: value for key, value in error.extensions.items() if key not in body})
    if error.fields:
        body["errors"] = [{"pointer": f"#/{field}", "detail": error.detail} for field in error.fields]
    return body


def field_errors(detail: Any, pointer: str = "") -> list[dict[str, str]]:
    """Flatten DRF's nested error structure into `[{pointer, detail}]`, one per message."""
    if isinstance(detail, dict):
        errors: list[dict[str, str]] = []
        for key, value in detail.items():
            # RFC 6901: "~" and "/" inside a name are escaped as "~0" and "~1".
            escaped = str(key).replace("~", "~0").replace("/", "~1")
            child = pointer if key == "non_field_errors" else f"{pointer}/{escaped}"
            errors.extend(field_errors(value, child))
        return errors
    if isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            return [{"pointer": f"#{pointer}", "detail": str(item)} for item in detail]
        errors = []
        for index, item in enumerate(detail):
            if isinstance(item, dict | list):
                errors.extend(field_errors(item, f"{pointer}/{index}"))
            else:
                errors.append({"pointer": f"#{pointer}", "detail": str(item)})
        return errors
    return [{"pointer": f"#{pointer}", "detail": str(detail)}]


def _problem_response(body: dict[str, Any], *, headers: dict[str, str] | None = None) -> Response:
    response = Response(body, status=body["status"], headers=headers)
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    request = context.get("request")
    instance = request.path if request is not None else ""
    if isinstance(exc, DomainError):
        response = _problem_response(domain_error_body(exc, instance=instance))
        # Read by the request transaction (accounts.tenancy): the refusal keeps what it recorded.
        response.keeps_changes = exc.keeps_changes  # type: ignore[attr-defined]  # an attribute of our own
        return response
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None

    headers: dict[str, str] = {}
    if isinstance(exc, Problem):
        body = problem_body(
            status_code=exc.status_code,
            slug=exc.slug,
            detail=str(exc.detail),
            instance=instance,
            title=exc.title,
        )
        headers.update(exc.headers)
    elif isinstance(exc, exceptions.ValidationError):
        errors = field_errors(exc.detail)
        body = problem_body(
            status_code=400,
            slug="validation-error",
            instance=instance,
            title="Your request has invalid fields",
            detail=f"{len(errors)} field(s) are invalid; see errors.",
        )
        body["errors"] = errors
    else:
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
        body = problem_body(
            status_code=exc.status_code,
            slug=str(code).replace("_", "-"),
            detail=str(exc.detail),
            instance=instance,
        )
    if auth_header := getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = auth_header
    if wait := getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(wait))
    return _problem_response(body, headers=headers)


def problem_response(request: HttpRequest, status_code: int, slug: str, detail: str) -> JsonResponse:
    body = problem_body(status_code=status_code, slug=slug, detail=detail, instance=request.path)
    return JsonResponse(body, status=status_code, content_type=PROBLEM_CONTENT_TYPE)


def domain_error_response(request: HttpRequest, error: DomainError) -> JsonResponse:
    """The same answer as `exception_handler`, for plain Django views (the partner webhooks)."""
    body = domain_error_body(error, instance=request.path)
    return JsonResponse(body, status=body["status"], content_type=PROBLEM_CONTENT_TYPE)


def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return problem_response(request, status.HTTP_404_NOT_FOUND, "not-found", "No such resource.")


def handler500(request: HttpRequest) -> JsonResponse:
    return problem_response(request, 500, "server-error", "An unexpected error occurred; it has been logged.")


def handler400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    if isinstance(exception, RequestDataTooBig):
        return problem_response(
            request, 413, "request-too-large", "The request body is larger than this API accepts."
        )
    return problem_response(request, 400, "bad-request", "The request could not be understood.")
