"""Log lines are JSON, carry a request id, and never carry a patient identifier."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

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
