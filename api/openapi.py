"""drf-spectacular hook: every API operation documents its RFC 9457 error responses.

The app answers bad input, missing or wrong credentials, other clinics' ids, oversized bodies,
conflicts and rate limits with application/problem+json (api.problems); the schema says so,
so generated clients and schemathesis know every status the API may answer with.
"""

from __future__ import annotations

from typing import Any

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "existing_patient": {
            "type": "string",
            "description": "patient-already-registered (409): the clinic's existing record of the patient, "
            "e.g. /api/v1/patients/42/.",
        },
        "existing_patient_id": {
            "type": "integer",
            "description": "patient-already-registered (409): the existing record's id, e.g. 42.",
        },
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"pointer": {"type": "string"}, "detail": {"type": "string"}},
                "required": ["pointer", "detail"],
            },
        },
    },
    "required": ["type", "title", "status"],
}

ERRORS = {
    "400": "Invalid input: every invalid field is listed in `errors`.",
    "401": "No token, or an expired or revoked one.",
    "403": "The token lacks the scope this operation needs.",
    "404": "No such object for this clinic (another clinic's objects are not found either).",
    "405": "Method not allowed.",
    "406": "The requested response type cannot be produced.",
    "409": "Conflict: the same Idempotency-Key is still in flight, or the state forbids the change.",
    "413": "Request body too large.",
    "415": "Unsupported request content type.",
    "422": "The Idempotency-Key was already used with a different request.",
    "429": "Rate limit exceeded; see Retry-After.",
}


def problem_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    reference = {"$ref": "#/components/schemas/Problem"}
    for path, item in result.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            for status, description in ERRORS.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/problem+json": {"schema": reference}},
                    },
                )
    return result
