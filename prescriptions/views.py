"""The patient's status page behind the signed link (prescriptions.status_link)."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from audit.services import remote_address
from events.services import events_for
from prescriptions.models import Prescription, Status
from prescriptions.plain_status import plain_status
from prescriptions.status_link import status_link_prescription_id

# Nothing on these pages loads from anywhere but here; nothing may frame them or post from them.
STATUS_PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def _rate_limited(request: HttpRequest) -> bool:
    """At most STATUS_LINK_RATE_PER_MINUTE pages a minute per address (guessing tokens is futile
    anyway: they are signed; this keeps the page cheap to serve)."""
    key = f"track:{remote_address(request) or '-'}:{int(time.time() // 60)}"
    cache.add(key, 0, timeout=120)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        count = 1
    return count > settings.STATUS_LINK_RATE_PER_MINUTE


def _page(request: HttpRequest, template: str, context: dict[str, object], status: int) -> HttpResponse:
    response = TemplateResponse(request, template, context, status=status)
    response["Content-Security-Policy"] = STATUS_PAGE_CSP
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def status_page(request: HttpRequest, token: str) -> HttpResponse:
    if _rate_limited(request):
        response = _page(request, "track/unavailable.html", {"too_many": True}, status=429)
        response["Retry-After"] = "60"
        return response
    prescription_id = status_link_prescription_id(token=token)
    prescription = (
        Prescription.objects.select_related("patient").filter(pk=prescription_id).first()
        if prescription_id is not None
        else None
    )
    if prescription is None or prescription.status == Status.CANCELLED:
        return _page(request, "track/unavailable.html", {"too_many": False}, status=404)
    events = events_for(aggregate_type="prescription", aggregate_id=prescription.pk)
    context = {
        "first_name": prescription.patient.given_name,
        "status": plain_status(prescription=prescription, events=events, for_patient=True),
        "reference": prescription.pk,
    }
    return _page(request, "track/status.html", context, status=200)
