"""Structured JSON logs with a request id, and a redaction layer for patient identifiers.

Every log line (ours through structlog, and every library's through the stdlib handler)
passes `redact_phi` before it is rendered, field by field: values under identifier-like keys
are replaced; correlation fields (request id, task id and name, duration, status code) are
never touched; a path or the `request` keeps its route and loses its query string; free text
has query strings, NHS numbers, email addresses and phone numbers masked. The
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
from structlog.typing import EventDict, WrappedLogger

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
# Correlation fields: never redacted, so one request or task can be followed across lines.
# Identifiers by construction (ids, names of code, numbers), they cannot carry patient data;
# a path keeps its route and loses its query string, where search terms travel.
CORRELATION_FIELDS = frozenset(
    {
        "request_id",
        "task_id",
        "task",
        "task_name",
        "duration",
        "duration_ms",
        "runtime",
        "status_code",
        "method",
        "logger",
        "level",
        "timestamp",
    }
)
# Celery's worker lines carry the task as `data: {"id", "name", "runtime", "hostname"}`.
_CELERY_DATA_FIELDS = {"id": "task_id", "name": "task_name", "runtime": "runtime", "hostname": "task"}
# Identifier-shaped runs of digits, never inside a longer token (a request id, a uuid, a
# duration such as 0.0123456789s), so correlation values elsewhere in a message survive.
_NOT_IN_TOKEN = r"(?<![\w.\-/])"
_TOKEN_END = r"(?![\w\-/])(?!\.\d)"
_PATTERNS = [
    re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"),  # email
    re.compile(_NOT_IN_TOKEN + r"\d{3}[ -]?\d{3}[ -]?\d{4}" + _TOKEN_END),  # NHS number (3-3-4)
    re.compile(_NOT_IN_TOKEN + r"\+?\d[\d ()-]{8,}\d" + _TOKEN_END),  # phone numbers
    re.compile(r"(?<![\w-])(19|20)\d\d-\d\d-\d\d(?![\d:T])"),  # bare dates (birth dates)
]
# Every pattern above needs a digit or an "@": text with neither is left as it is, unscanned.
_MASKABLE = re.compile(r"[\d@]")
# A query string in a URL or path: search terms (`?search=Smith`, "Family-name YYYY-MM-DD").
_QUERY_STRING = re.compile(r"\?[^\s\"'<>]*")
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


# Task ids (uuids) and request ids (32 hex digits) inside a message are left whole.
_CORRELATION_TOKEN = re.compile(
    r"(?<![\w-])(?:[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}|[0-9a-f]{32})(?![\w-])"
)


def redact_text(text: str) -> str:
    """Free text (a message, an error): query strings and identifier-shaped values masked."""
    text = _QUERY_STRING.sub("?" + REDACTED, text)
    pieces, start = [], 0
    for token in _CORRELATION_TOKEN.finditer(text):
        pieces += [_mask(text[start : token.start()]), token.group()]
        start = token.end()
    return "".join([*pieces, _mask(text[start:])])


def _mask(text: str) -> str:
    if _MASKABLE.search(text) is None:
        return text  # no digit and no "@": nothing any pattern could match
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def path_without_query(path: str) -> str:
    return path.split("?", 1)[0]


def _request_summary(request: Any) -> str:
    """`request` (Django's log records carry the HttpRequest): method and path, no query."""
    method = getattr(request, "method", None)
    path = getattr(request, "path", None)
    if isinstance(method, str) and isinstance(path, str):
        return redact_text(f"{method} {path}")
    return redact_text(str(request))


def _redact(value: Any, key: str = "") -> Any:
    if key.startswith("_"):
        return value  # structlog's own bookkeeping (`_record`), removed before rendering
    if key in CORRELATION_FIELDS and isinstance(value, str | int | float | None):
        return value
    if key == "path" and isinstance(value, str):
        return path_without_query(value)
    if key == "request":
        return value if value is None else _request_summary(value)
    if key.lower() in PHI_KEYS and value not in (None, ""):
        return REDACTED
    if key == "data" and isinstance(value, dict) and {"id", "name"} <= set(value):
        return {k: v if k in _CELERY_DATA_FIELDS else _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    # Anything else would be rendered by repr(): redact that text rather than trust it.
    return redact_text(repr(value))


def redact_phi(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: no patient identifier survives into the rendered line, and the
    correlation fields come out exactly as they went in."""
    request_id = getattr(event_dict.get("request"), "request_id", None)
    if request_id and "request_id" not in event_dict:
        # django.request logs a 4xx/5xx after the middleware has unbound the request id.
        event_dict = {**event_dict, "request_id": request_id}
    return {key: _redact(value, key) for key, value in event_dict.items()}


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
        request.request_id = request_id  # type: ignore[attr-defined]  # an attribute of our own, read below
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
