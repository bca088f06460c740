"""Log lines are JSON, carry a request id, and never carry a patient identifier."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from common.logs import (
    REDACTED,
    _task_bind_request_id,
    _task_publish_add_request_id,
    logging_config,
    redact_phi,
)


def _render(logger_name: str, message: str, *args: object, **extra: object) -> dict:
    formatter_config = logging_config("INFO")["formatters"]["json"]
    factory = formatter_config.pop("()")
    formatter = factory(**formatter_config)
    record = logging.LogRecord(logger_name, logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return json.loads(formatter.format(record))


def test_identifier_keys_are_replaced_whatever_their_value():
    event = redact_phi(None, "info", {"event": "x", "family_name": "Smith", "patient": {"email": "a@b.c"}})

    assert event == {"event": "x", "family_name": REDACTED, "patient": {"email": REDACTED}}


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("nhs 9434765919 seen", "9434765919"),
        ("nhs 943 476 5919 seen", "943 476 5919"),
        ("mail sam.person@example.org now", "sam.person@example.org"),
        ("call +44 7700 900123 now", "+44 7700 900123"),
        ("born 1971-06-23 in", "1971-06-23"),
    ],
)
def test_identifier_patterns_are_masked_inside_any_message(text, secret):
    rendered = _render("django.request", "%s", text)

    assert rendered["event"] == text.replace(secret, REDACTED)


def test_a_library_log_line_is_json_with_level_logger_and_timestamp():
    rendered = _render("celery.worker", "task %s done", "prescriptions.tasks.prescription_check")

    assert rendered["event"] == "task prescriptions.tasks.prescription_check done"
    assert (rendered["level"], rendered["logger"]) == ("info", "celery.worker")
    assert rendered["timestamp"].endswith("Z")


def test_the_response_carries_the_request_id_it_was_given_or_a_new_one(client):
    given = client.get("/health/", HTTP_X_REQUEST_ID="abc-123")
    made_up = client.get("/health/")
    unsafe = client.get("/health/", HTTP_X_REQUEST_ID="bad id\nwith newline")

    assert given["X-Request-ID"] == "abc-123"
    assert len(made_up["X-Request-ID"]) == 32
    assert unsafe["X-Request-ID"] != "bad id\nwith newline"


def test_a_published_task_carries_the_request_id_and_the_task_binds_it():
    structlog.contextvars.bind_contextvars(request_id="req-42")
    headers: dict = {}
    _task_publish_add_request_id(headers=headers)
    structlog.contextvars.clear_contextvars()

    class _Task:
        name = "prescriptions.tasks.prescription_check"

        class request:  # noqa: N801
            request_id = headers["request_id"]

    _task_bind_request_id(task=_Task(), task_id="t-1")

    assert headers == {"request_id": "req-42"}
    assert structlog.contextvars.get_contextvars() == {
        "request_id": "req-42",
        "task": "prescriptions.tasks.prescription_check",
    }
    structlog.contextvars.clear_contextvars()


# --- Both halves: nothing private, every correlation field intact ---------------------------


class _Collect(logging.Handler):
    """Every record rendered as production renders it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        formatter_config = logging_config("DEBUG")["formatters"]["json"]
        factory = formatter_config.pop("()")
        self.setFormatter(factory(**formatter_config))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def collected():  # type: ignore[no-untyped-def]
    handler = _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


@pytest.mark.django_db
def test_a_search_term_in_the_query_string_is_not_logged_and_the_request_id_is(client, collected):
    response = client.get(
        "/api/v1/patients/?search=Zqsearchmarker%201957-03-14&page=2", HTTP_X_REQUEST_ID="req-7f3a9c21"
    )

    assert response.status_code == 401
    text = "\n".join(collected.lines)
    assert "Zqsearchmarker" not in text
    assert "1957-03-14" not in text
    logged = [json.loads(line) for line in collected.lines if '"django.request"' in line]
    assert len(logged) == 1
    assert logged[0]["request"] == "GET /api/v1/patients/"
    assert (logged[0]["request_id"], logged[0]["status_code"]) == ("req-7f3a9c21", 401)


def test_a_celery_success_line_keeps_task_id_name_and_duration_whole():
    task_id = "5a2639c1-8841-4e2e-9d3b-123456789012"
    context = {
        "id": task_id,
        "name": "prescriptions.tasks.prescription_check",
        "return_value": "None",
        "runtime": 0.0123456789,
        "args": "(42,)",
        "kwargs": "{}",
    }
    message = "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s"

    rendered = _render("celery.app.trace", message, context, data=context)

    assert rendered["event"] == (
        f"Task prescriptions.tasks.prescription_check[{task_id}] succeeded in 0.0123456789s: None"
    )
    assert rendered["data"]["id"] == task_id
    assert rendered["data"]["name"] == "prescriptions.tasks.prescription_check"
    assert rendered["data"]["runtime"] == 0.0123456789


def test_correlation_fields_are_never_touched_and_identifiers_beside_them_are():
    event = redact_phi(
        None,
        "info",
        {
            "event": "dispatch sent for 943 476 5919",
            "request_id": "0123456789abcdef0123456789abcdef",
            "task_id": "1234567890",
            "task": "pharmacy.tasks.dispatch_send",
            "duration": 1234567890.5,
            "status_code": 502,
            "path": "/admin/patients/patient/?q=Quixotica+1971-06-23",
            "family_name": "Quixotica",
            "detail": "lookup https://example.org/find?name=Quixotica failed",
        },
    )

    assert event == {
        "event": f"dispatch sent for {REDACTED}",
        "request_id": "0123456789abcdef0123456789abcdef",
        "task_id": "1234567890",
        "task": "pharmacy.tasks.dispatch_send",
        "duration": 1234567890.5,
        "status_code": 502,
        "path": "/admin/patients/patient/",
        "family_name": REDACTED,
        "detail": f"lookup https://example.org/find?{REDACTED} failed",
    }


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789٣@ -+().abcXYZ_/\n"), max_size=40) | st.text(max_size=40))
def test_the_unscanned_shortcut_masks_exactly_what_every_pattern_would(text: str) -> None:
    from common import logs

    scanned = text
    for pattern in logs._PATTERNS:
        scanned = pattern.sub(logs.REDACTED, scanned)
    assert logs._mask(text) == scanned
