"""RFC 9457 problem details for every API error.

DRF's exception handler is replaced so that validation errors list every invalid field as a
JSON pointer, and every other error (401, 403, 404, 405, 409, 413, 415, 422, 429) has the
same shape. `Problem` is what services and views raise for domain errors.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

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


class Problem(exceptions.APIException):
    """A domain error with its own status, type slug and optional headers."""

    def __init__(
        self,
        *,
        status_code: int,
        slug: str,
        detail: str,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        keeps_changes: bool = False,
    ) -> None:
        super().__init__(detail=detail)
        # True when the refusal itself records something that must stay (e.g. a staff-queue
        # entry); the request transaction then commits despite the 4xx.
        self.keeps_changes = keeps_changes
        self.status_code = status_code
        self.slug = slug
        self.title = title or _TITLES.get(status_code, "Error")
        self.headers = headers or {}


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


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    request = context.get("request")
    instance = request.path if request is not None else ""
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
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
    set_rollback()
    response = Response(body, status=exc.status_code, headers=headers)
    response.content_type = PROBLEM_CONTENT_TYPE
    response.keeps_changes = getattr(exc, "keeps_changes", False)
    return response


def problem_response(request: HttpRequest, status_code: int, slug: str, detail: str) -> JsonResponse:
    body = problem_body(status_code=status_code, slug=slug, detail=detail, instance=request.path)
    return JsonResponse(body, status=status_code, content_type=PROBLEM_CONTENT_TYPE)


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
