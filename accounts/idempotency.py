"""Idempotency-Key handling for the clinic API's POSTs (Stripe's semantics, IETF draft).

- same key, same request   → the first response replayed, `Idempotent-Replayed: true`
- same key, other request  → 422
- same key, first in flight → 409 with Retry-After
Keys are scoped to the clinic and kept for settings.IDEMPOTENCY_KEY_TTL. The key row is
written inside the same transaction as the resource the request creates, so a crash before
commit leaves neither; a request that fails (validation, 404, ...) stores nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import clinic_of
from api.problems import Problem
from common import rows
from common.errors import atomic_keeping_refusals
from patients.models import Clinic, IdempotencyKey

HEADER = "Idempotency-Key"
MAX_LENGTH = 255


def key_from(request: Request) -> str:
    key = request.headers.get(HEADER)
    if key is None or key == "":
        raise Problem(
            status_code=400,
            slug="idempotency-key-missing",
            detail=f"This request needs an {HEADER} header (a unique value per operation, "
            f"e.g. a UUID). Retries must send the same value.",
        )
    if len(key) > MAX_LENGTH or not all(32 <= ord(char) < 127 for char in key):
        raise Problem(
            status_code=400,
            slug="idempotency-key-invalid",
            detail=f"{HEADER} must be 1 to {MAX_LENGTH} printable ASCII characters.",
        )
    return key


def request_fingerprint(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _lock_id(clinic: Clinic, key: str) -> int:
    digest = hashlib.sha256(f"{clinic.pk}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# The lock and the look-up in one round trip. Both read one snapshot, so a request that
# committed the same key between the snapshot and the lock is not seen here; the key's unique
# constraint then refuses this request's row and the request answers 409 like any other
# in-flight duplicate (see _store), rolled back whole.
_CLAIM_SQL = f"""
SELECT pg_try_advisory_xact_lock(%s),
       (SELECT id FROM {IdempotencyKey._meta.db_table} WHERE clinic_id = %s AND key = %s)
"""


def _in_flight() -> Problem:
    return Problem(
        status_code=409,
        slug="idempotency-key-in-flight",
        detail="A request with this Idempotency-Key is still being processed; retry shortly.",
        headers={"Retry-After": "1"},
    )


def _claim(clinic: Clinic, key: str) -> IdempotencyKey | None:
    """Take a transaction-scoped advisory lock on (clinic, key), or answer 409; returns the
    stored key, if any."""
    with rows.planned_cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [_lock_id(clinic, key), clinic.pk, key])
        acquired, stored_id = cursor.fetchone()
    if not acquired:
        raise _in_flight()
    return None if stored_id is None else IdempotencyKey.objects.get(pk=stored_id)


def _replay(stored: IdempotencyKey, fingerprint: str, request: Request) -> Response:
    if stored.request_hash != fingerprint:
        raise Problem(
            status_code=422,
            slug="idempotency-key-reused",
            detail="This Idempotency-Key was already used with a different request "
            f"({stored.method} {stored.path}); use a new key for a new operation.",
        )
    return Response(
        json.loads(stored.response_body),
        status=stored.response_status,
        headers={"Idempotent-Replayed": "true"},
    )


def idempotent(handler: Callable[..., Response]) -> Callable[..., Response]:
    """Decorate an APIView's `post` so it runs at most once per (clinic, Idempotency-Key)."""
    return idempotent_on(key_from)(handler)


def idempotent_on(
    key_of: Callable[[Request], str],
) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """The same, with the key taken from the request by `key_of` (e.g. a FHIR message's
    Bundle.identifier, which is what makes a re-sent message the same message)."""
    return functools.partial(_idempotent, key_of)


def _idempotent(
    key_of: Callable[[Request], str], handler: Callable[..., Response]
) -> Callable[..., Response]:
    @functools.wraps(handler)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = key_of(request)
        clinic = clinic_of(request)
        fingerprint = request_fingerprint(request)
        # Inside the request's transaction (accounts.tenancy): no savepoint of its own, since a
        # refusal rolls the whole request back anyway.
        with atomic_keeping_refusals(savepoint=False):
            stored = _claim(clinic, key)
            if stored is not None and stored.expires_at > timezone.now():
                return _replay(stored, fingerprint, request)
            if stored is not None:
                stored.delete()
            response = handler(view, request, *args, **kwargs)
            if 200 <= response.status_code < 300:
                _store(clinic, key, fingerprint, request, response)
            return response

    return wrapper


_STORE_SQL = rows.insert_sql(IdempotencyKey, with_pk=False)


def _key_insert(stored: IdempotencyKey) -> None:
    # Hand-written: on every POST, the ORM's create cost more than the insert.
    with rows.planned_cursor() as cursor:
        cursor.execute(_STORE_SQL, rows.insert_values(stored, with_pk=False))


def _store(clinic: Clinic, key: str, fingerprint: str, request: Request, response: Response) -> None:
    stored = IdempotencyKey(
        clinic=clinic,
        key=key,
        method=request.method or "",
        path=request.path,
        request_hash=fingerprint,
        response_status=response.status_code,
        response_body=json.dumps(response.data, default=str),
        expires_at=timezone.now() + settings.IDEMPOTENCY_KEY_TTL,
    )
    try:
        _key_insert(stored)
    except IntegrityError as error:
        # The same key committed by a request this one's claim could not yet see (_CLAIM_SQL).
        raise _in_flight() from error
