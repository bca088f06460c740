"""Recording reads of patient records (one INSERT per request, however many patients it shows),
and the audit entry of a row a service writes with hand-written SQL."""

from __future__ import annotations

from collections.abc import Iterable

from auditlog import get_logentry_model
from auditlog.cid import get_cid
from auditlog.context import auditlog_disabled
from auditlog.diff import model_instance_diff
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db import DEFAULT_DB_ALIAS
from django.db.models import Model
from django.db.models.signals import pre_save
from django.http import HttpRequest
from django.utils.encoding import smart_str

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


def audit_entry_of_created(instance: Model) -> LogEntry | None:
    """The entry django-auditlog's post_save receiver would write for `instance`, just created,
    built unsaved for a caller that writes the instance's row with hand-written SQL (and the
    entry with it, in the same statement): the same diff with the same masks, the same
    correlation id, and the request's actor and address filled in by auditlog's own pre_save
    receiver. None when auditlog is disabled here or does not track the model."""
    if auditlog_disabled.get() or not auditlog.contains(type(instance)):
        return None
    model = get_logentry_model()
    changes = model_instance_diff(
        None, instance, use_json_for_changes=getattr(settings, "AUDITLOG_STORE_JSON_CHANGES", False)
    )
    if not changes:
        return None
    get_additional_data = getattr(instance, "get_additional_data", None)
    entry = model(
        additional_data=get_additional_data() if callable(get_additional_data) else None,
        action=model.Action.CREATE,
        changes=changes,
        content_type=ContentType.objects.get_for_model(instance),
        object_pk=smart_str(instance.pk),
        object_id=instance.pk if isinstance(instance.pk, int) else None,
        object_repr=smart_str(instance),
        serialized_data=model.objects._get_serialized_data_or_none(instance),
        cid=get_cid(),
    )
    pre_save.send(sender=model, instance=entry, raw=False, using=DEFAULT_DB_ALIAS, update_fields=None)
    return entry
