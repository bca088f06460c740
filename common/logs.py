"""Structured JSON logs with a request id, and a redaction layer for patient identifiers.

Every log line (ours through structlog, and every library's through the stdlib handler)
passes `redact_phi` before it is rendered: values under identifier-like keys are replaced,
and NHS numbers, email addresses and phone numbers are masked wherever they appear. The
request id comes from `X-Request-ID` (or is made up), is echoed in the response, and travels
to Celery tasks as a message header, so one id follows a prescription from web to workers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from django.http import HttpRequest, HttpResponse

REDACTED = "[redacted]"
PHI_KEYS = frozenset(
    {
        "given_name",
        "family_name",
        "name",
        "birth_date",
        "birthdate",
        "dob",
        "nhs_number",
        "address",
        "address_line",
        "city",
        "region",
        "postal_code",
        "postcode",
        "email",
        "phone",
        "telecom",
    }
)
_PATTERNS = [
    re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"),  # email
    re.compile(r"(?<!\d)\d{3}[ -]?\d{3}[ -]?\d{4}(?!\d)"),  # NHS number (3-3-4) and similar
    re.compile(r"\+?\d[\d ()-]{8,}\d"),  # phone numbers
    re.compile(r"(?<!\d)(19|20)\d\d-\d\d-\d\d(?![\d:T])"),  # bare dates (birth dates)
]
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def redact_text(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def _redact(value: Any, key: str = "") -> Any:
    if key.lower() in PHI_KEYS and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    return value


def redact_phi(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: no patient identifier survives into the rendered line."""
    return {
        key: _redact(value, key) if key not in {"timestamp", "level"} else value
        for key, value in event_dict.items()
    }


SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.stdlib.ExtraAdder(),
    structlog.processors.format_exc_info,
    redact_phi,
]


def logging_config(level: str) -> dict[str, Any]:
    """The stdlib LOGGING dict: one JSON handler, every record through the processors above."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer(),
                ],
                "foreign_pre_chain": SHARED_PROCESSORS,
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            "pgserver": {"level": "WARNING"},
            "stripe": {"level": "WARNING"},  # the SDK logs every request at INFO
        },
    }


def structlog_configure() -> None:
    structlog.configure(
        processors=[
            *SHARED_PROCESSORS[:-1],
            structlog.stdlib.PositionalArgumentsFormatter(),
            redact_phi,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def request_id_current() -> str | None:
    return structlog.contextvars.get_contextvars().get("request_id")


class RequestIdMiddleware:
    """Bind a request id to every log line of the request and echo it in the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            response = self.get_response(request)
        finally:
            structlog.contextvars.clear_contextvars()
        response[REQUEST_ID_HEADER] = request_id
        return response


# --- Celery: the request id travels as a message header ---------------------------------------
def celery_signals_connect() -> None:
    from celery import signals

    signals.before_task_publish.connect(_task_publish_add_request_id, weak=False)
    signals.task_prerun.connect(_task_bind_request_id, weak=False)
    signals.task_postrun.connect(_task_unbind, weak=False)


def _task_publish_add_request_id(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    request_id = request_id_current()
    if headers is not None and request_id:
        headers["request_id"] = request_id


def _task_bind_request_id(task: Any = None, task_id: str = "", **kwargs: Any) -> None:
    structlog.contextvars.clear_contextvars()
    request = task.request if task is not None else None
    request_id = getattr(request, "request_id", None) or (getattr(request, "headers", None) or {}).get(
        "request_id"
    )
    structlog.contextvars.bind_contextvars(request_id=request_id or f"task-{task_id}", task=task.name)


def _task_unbind(**kwargs: Any) -> None:
    structlog.contextvars.clear_contextvars()
