"""Recording reads of patient records. One INSERT per request, however many patients it shows."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import User
from django.http import HttpRequest

from audit.models import PatientAccess
from common.logs import request_id_current
from patients.models import Patient


def remote_address(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is whatever the caller wrote unless a trusted proxy
    # rewrites it, and an audit trail must not be forgeable by the audited.
    return request.META.get("REMOTE_ADDR") or None


def patient_access_record(
    *,
    patients: Iterable[Patient],
    channel: str,
    action: str,
    request: HttpRequest | None,
    staff_user: User | None = None,
    client_id: str = "",
    remote_addr: str | None = None,
    request_id: str = "",
) -> int:
    """Append one access row per patient shown; returns how many were written. Callers that
    are not Django views (the MCP server) pass request=None and the address and id themselves."""
    if request is not None:
        remote_addr = remote_address(request)
        request_id = request_id_current() or ""
    rows = [
        PatientAccess(
            patient_id=patient.pk,
            clinic_id=patient.clinic_id,
            channel=channel,
            action=action,
            staff_user=staff_user,
            client_id=client_id,
            remote_addr=remote_addr,
            request_id=request_id,
        )
        for patient in patients
    ]
    PatientAccess.objects.bulk_create(rows)
    return len(rows)
