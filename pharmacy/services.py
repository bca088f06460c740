"""Dispatch to the pharmacy gateway, dead letters, and the gateway's webhooks."""

from __future__ import annotations

import logging
import random
import time
import uuid
from datetime import date, datetime, timedelta
from typing import Any, NoReturn, cast

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Model, QuerySet
from django.utils import timezone

from common import rows, signing
from common.errors import InvalidInput, NotFound
from common.jsonsafe import json_loads_bounded
from events.models import Event
from events.services import RetryLater, outbox_task_enqueue
from patients.models import Clinic, Patient
from pharmacy import fhir, routing
from pharmacy.adapters.registry import (
    DEFAULT_PARTNER_CODE,
    PartnerNotConfigured,
    adapter_for,
    partner_endpoint,
)
from pharmacy.fhir.eps import prescription_id
from pharmacy.gateway import (
    Gateway,
    GatewayRejected,
    GatewayUnavailable,
    OrderAlreadyDispensed,
    OrderStatus,
    OrderUnknown,
    PartnerCannotFill,
)
from pharmacy.models import (
    DeadLetter,
    Dispatch,
    GatewayCancellation,
    GatewayWebhookEvent,
    OrderAlert,
    Partner,
    PartnerCircuit,
)
from prescriptions import selectors as prescription_selectors
from prescriptions import services as prescriptions
from prescriptions.checks.validity import supply_from
from prescriptions.models import Medication, Prescriber, Prescription, PrescriptionItem, Status

logger = logging.getLogger(__name__)

# The tasks that send to the gateway (pharmacy.tasks), owed through the outbox by name.
DISPATCH_SEND_TASK = "pharmacy.tasks.dispatch_send"
CANCELLATION_SEND_TASK = "pharmacy.tasks.gateway_cancellation_send"
ROUTE_WAITING_TASK = "pharmacy.tasks.dispatches_route_waiting"

# Only a paid (private) or NHS-funded prescription is dispatched.
READY_FOR_DISPATCH = frozenset({Status.PAID, Status.NHS_FUNDED})
SENDABLE = READY_FOR_DISPATCH | {Status.DEAD_LETTERED}


class WebhookRejected(InvalidInput):
    """The gateway's webhook is not acceptable (signature, shape)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, code="webhook-rejected")


class WebhookForUnknownOrder(NotFound):
    def __init__(self) -> None:
        super().__init__("unknown order", code="webhook-rejected")


def _controlled_without_approval(prescription: Prescription) -> bool:
    controlled = any(item.medication.is_controlled for item in prescription.items.all())
    return controlled and not prescriptions.has_pharmacist_approval(prescription_id=prescription.pk)


_READY_SQL = (
    f"SELECT {rows.columns_sql(Prescription, 'prescription')}, {rows.columns_sql(PrescriptionItem, 'item')},"
    f" {rows.columns_sql(Medication, 'medication')}"
    f' FROM "{Prescription._meta.db_table}" AS prescription'
    f' LEFT JOIN "{PrescriptionItem._meta.db_table}" AS item ON item.prescription_id = prescription.id'
    f' LEFT JOIN "{Medication._meta.db_table}" AS medication ON medication.id = item.medication_id'
    " WHERE prescription.id = %s AND prescription.status = ANY(%s)"
    " ORDER BY item.id"
)


def _ready_for_dispatch(prescription_id: int) -> Prescription | None:
    """The prescription if it is paid or NHS-funded, with its items and their medications
    (read together, as a prefetch would), else None."""
    with rows.planned_cursor() as cursor:
        cursor.execute(_READY_SQL, [prescription_id, sorted(str(status) for status in READY_FOR_DISPATCH)])
        found = cursor.fetchall()
    if not found:
        return None
    models: tuple[type[Model], ...] = (Prescription, PrescriptionItem, Medication)
    prescription = _instances(found[0], models)[0]
    _items_cache(prescription, [_instances(row, models)[1:] for row in found])
    return cast(Prescription, prescription)


def _instances(row: tuple[Any, ...], models: tuple[type[Model], ...]) -> list[Any]:
    """The instances of `models` from a row of their columns (common.rows), in that order."""
    instances, start = [], 0
    for model in models:
        width = rows.column_count(model)
        instances.append(rows.instance_from_columns(model, row[start : start + width]))
        start += width
    return instances


def _items_cache(prescription: Prescription, items: list[list[Any]]) -> None:
    """Give `prescription` its items (each [item, medication], or Nones from a LEFT JOIN when
    it has none), as prefetch_related("items__medication") would."""
    loaded = []
    for item, medication in items:
        if item is None:
            continue
        item.medication = medication
        item.prescription = prescription
        loaded.append(item)
    cached: Any = prescription.items.all()
    cached._result_cache = loaded
    cached._prefetch_done = True
    target: Any = prescription
    target._prefetched_objects_cache = {"items": cached}


def dispatch_create(*, prescription_id: int, today: date | None = None) -> Dispatch | None:
    """Create the one dispatch of a paid or NHS-funded prescription and owe its send.

    None when the prescription is not ready for dispatch or not yet due (see saga.holds)."""
    prescription = _ready_for_dispatch(prescription_id)
    if prescription is None:
        return None
    if supply_from(prescription) > (today or timezone.localdate()):
        # Not before its start (or earliest fill) date: the saga holds it and releases it then.
        return None
    # No savepoint: nothing here raises for the caller to catch and go on (the insert ignores
    # an existing dispatch rather than failing on it).
    with transaction.atomic(savepoint=False):
        dispatch, created = _dispatch_insert(prescription_id)
        if _controlled_without_approval(prescription):
            # Invariant: a controlled drug never reaches dispatch without a pharmacist's approval.
            Dispatch.objects.filter(pk=dispatch.pk).update(
                status=Dispatch.Status.FAILED,
                last_error="Controlled drug without a recorded pharmacist approval: not sent.",
            )
            logger.error(
                "dispatch refused: controlled drug without approval",
                extra={"prescription_id": prescription_id},
            )
            return dispatch
        if created:
            outbox_task_enqueue(task=DISPATCH_SEND_TASK, args=[dispatch.pk])
    return dispatch


_DISPATCH_INSERT_SQL = (
    f'{rows.insert_sql(Dispatch, with_pk=False)} ON CONFLICT ("prescription_id") DO NOTHING RETURNING "id"'
)


def _dispatch_insert(prescription_id: int) -> tuple[Dispatch, bool]:
    """The prescription's dispatch, inserted (with the model's defaults) unless one exists:
    one statement, where get_or_create takes a select and a savepoint around the insert.
    A concurrent insert is waited for, then read."""
    dispatch = Dispatch(prescription_id=prescription_id)
    values = rows.insert_values(dispatch, with_pk=False)
    with rows.planned_cursor() as cursor:
        cursor.execute(_DISPATCH_INSERT_SQL, values)
        row = cursor.fetchone()
    if row is None:
        return Dispatch.objects.get(prescription_id=prescription_id), False
    dispatch.pk = row[0]
    return rows.mark_saved(dispatch), True


# A pending dispatch with its prescription, the prescription's clinic, patient and prescriber,
# the dispatch's partner, and one row per item with its medication: what a send reads, in one
# statement (written in SQL: building it through the ORM cost more than running it).
_SENDING_MODELS: tuple[type[Model], ...] = (
    Dispatch,
    Prescription,
    Clinic,
    Patient,
    Prescriber,
    Partner,
    PrescriptionItem,
    Medication,
)
_SENDING_SQL = (
    f"SELECT {rows.columns_sql(Dispatch, 'dispatch')}, {rows.columns_sql(Prescription, 'prescription')},"
    f" {rows.columns_sql(Clinic, 'clinic')}, {rows.columns_sql(Patient, 'patient')},"
    f" {rows.columns_sql(Prescriber, 'prescriber')}, {rows.columns_sql(Partner, 'partner')},"
    f" {rows.columns_sql(PrescriptionItem, 'item')}, {rows.columns_sql(Medication, 'medication')}"
    f' FROM "{Dispatch._meta.db_table}" AS dispatch'
    f' JOIN "{Prescription._meta.db_table}" AS prescription ON prescription.id = dispatch.prescription_id'
    f' JOIN "{Clinic._meta.db_table}" AS clinic ON clinic.id = prescription.clinic_id'
    f' JOIN "{Patient._meta.db_table}" AS patient ON patient.id = prescription.patient_id'
    f' JOIN "{Prescriber._meta.db_table}" AS prescriber ON prescriber.id = prescription.prescriber_id'
    f' LEFT JOIN "{Partner._meta.db_table}" AS partner ON partner.id = dispatch.partner_id'
    f' LEFT JOIN "{PrescriptionItem._meta.db_table}" AS item ON item.prescription_id = prescription.id'
    f' LEFT JOIN "{Medication._meta.db_table}" AS medication ON medication.id = item.medication_id'
    " WHERE dispatch.id = %s AND dispatch.status = %s"
    " ORDER BY item.id"
)


def dispatch_sends_for_event(*, event_id: int) -> list[tuple[str, list[Any]]]:
    """The send task (name, arguments) of each dispatch of the prescription `event_id` is about:
    what its dispatch consumer owes, whether or not it is still owed."""
    dispatches = Dispatch.objects.filter(
        prescription_id__in=Event.objects.filter(pk=event_id, aggregate_type="prescription").values(
            "aggregate_id"
        )
    )
    return [(DISPATCH_SEND_TASK, [dispatch_id]) for dispatch_id in dispatches.values_list("pk", flat=True)]


def _load_for_sending(dispatch_id: int) -> Dispatch | None:
    """The pending dispatch, its relations read with it (as select_related and a prefetch of
    the items with their medications would), or None."""
    with rows.planned_cursor() as cursor:
        cursor.execute(_SENDING_SQL, [dispatch_id, Dispatch.Status.PENDING.value])
        found = cursor.fetchall()
    if not found:
        return None
    dispatch, prescription, clinic, patient, prescriber, partner = _instances(found[0], _SENDING_MODELS)[:6]
    prescription.clinic = clinic
    prescription.patient = patient
    prescription.prescriber = prescriber
    dispatch.partner = partner
    dispatch.prescription = prescription
    _items_cache(prescription, [_instances(row, _SENDING_MODELS)[6:] for row in found])
    return cast(Dispatch, dispatch)


def dispatch_send(*, dispatch_id: int, gateway: Gateway | None = None) -> str:
    """Send one pending dispatch to its partner (routing it first); returns what happened.

    Raises GatewayUnavailable only when the caller should retry later. Network I/O happens
    outside any transaction; the acknowledgement is recorded afterwards with a guarded update.
    A partner that cannot fill the order passes it to the next eligible partner.
    """
    dispatch = _load_for_sending(dispatch_id)
    if dispatch is None:
        return "not-pending"
    prescription = dispatch.prescription
    if prescription.status not in SENDABLE:
        return "not-sendable"
    if _controlled_without_approval(prescription):
        dispatch_dead_letter(dispatch_id=dispatch_id, error="controlled drug without approval")
        return "refused"
    try:
        bundle = dispatch_message(dispatch=dispatch)
    except fhir.FhirEncodingError as error:
        dispatch_dead_letter(dispatch_id=dispatch_id, error=f"cannot encode: {error}")
        return "dead-lettered"
    partner = dispatch.partner or routing.dispatch_route(dispatch=dispatch)
    if partner is None:
        return "awaiting-partner"
    try:
        client = gateway or adapter_for(partner)
    except PartnerNotConfigured as error:
        circuit_check(partner=partner.code)  # an open circuit holds the send back all the same
        dispatch_dead_letter(dispatch_id=dispatch_id, error=str(error))
        return "dead-lettered"
    circuit_to_close = _attempt_unless_circuit_open(dispatch_id=dispatch_id, partner=partner.code)
    try:
        acknowledgement = client.order_submit(bundle=bundle, idempotency_key=str(dispatch.idempotency_key))
    except PartnerCannotFill as error:
        if circuit_to_close:
            circuit_record_success(partner=partner.code)  # it answered
        return dispatch_fail_over(
            dispatch_id=dispatch_id, partner=partner, reason=error.reason, detail=str(error)
        )
    except GatewayRejected as error:
        if circuit_to_close:
            circuit_record_success(partner=partner.code)  # it answered
        dispatch_dead_letter(dispatch_id=dispatch_id, error=str(error), outcome=error.outcome)
        return "dead-lettered"
    except GatewayUnavailable as error:
        circuit_record_failure(partner=partner.code)
        attempts = Dispatch.objects.filter(pk=dispatch_id).values_list("attempts", flat=True)[0]
        Dispatch.objects.filter(pk=dispatch_id).update(last_error=str(error)[:1000])
        if _retries_spent(attempts=attempts, window_started_at=dispatch.window_started_at):
            dispatch_dead_letter(dispatch_id=dispatch_id, error=str(error))
            return "dead-lettered"
        raise
    if circuit_to_close:
        circuit_record_success(partner=partner.code)
    dispatch_record_acknowledged(dispatch_id=dispatch_id, order_id=acknowledgement.order_id)
    logger.info("dispatch %s acknowledged by %s", dispatch_id, partner.code)
    return "acknowledged"


def dispatch_fail_over(*, dispatch_id: int, partner: Partner, reason: str, detail: str) -> str:
    """`partner` cannot fill the order: note it as tried (never sent to again for this
    prescription), tell the clinic, and owe a send that routes to the next eligible partner,
    which holds the dispatch in the staff queue when none is left. The payment stays as it is:
    it is taken once per prescription, whichever partner fills it."""
    with transaction.atomic():
        dispatch = (
            Dispatch.objects.select_for_update()
            .filter(pk=dispatch_id, status=Dispatch.Status.PENDING, partner=partner)
            .first()
        )
        if dispatch is None:
            return "not-pending"
        dispatch.partners_tried = [*dispatch.partners_tried, {"partner": partner.code, "reason": reason[:60]}]
        dispatch.partner = None
        dispatch.attempts = 0
        dispatch.window_started_at = timezone.now()
        dispatch.last_error = detail[:1000]
        dispatch.save(
            update_fields=[
                "partners_tried",
                "partner",
                "attempts",
                "window_started_at",
                "last_error",
                "updated_at",
            ]
        )
        prescriptions.prescription_record_event(
            prescription_id=dispatch.prescription_id,
            event_type="prescription.partner_refused",
            payload={
                "partner": partner.code,
                "reason": reason[:60],
                "summary": f"{partner.name} cannot fill it ({reason[:60]}): trying the next partner.",
            },
            actor=f"partner:{partner.code}",
        )
        outbox_task_enqueue(task=DISPATCH_SEND_TASK, args=[dispatch_id])
    logger.warning("dispatch %s refused by %s (%s): routing again", dispatch_id, partner.code, reason[:60])
    return "failed-over"


def dispatches_route_waiting(*, limit: int = 200) -> list[int]:
    """Route again the dispatches waiting for a partner (stock or partners changed); those that
    now have one are owed their send. Returns their ids."""
    routed = []
    for dispatch in routing.dispatches_waiting(limit=limit):
        decision = routing.decide(dispatch=dispatch)
        if decision.chosen is None:
            Dispatch.objects.filter(pk=dispatch.pk).update(routing=decision.as_json())
            continue
        with transaction.atomic():
            partner = routing.dispatch_assign(
                dispatch_id=dispatch.pk, decision=decision, from_status=Dispatch.Status.AWAITING_PARTNER
            )
            if partner is None:
                continue
            outbox_task_enqueue(task=DISPATCH_SEND_TASK, args=[dispatch.pk])
        routed.append(dispatch.pk)
    return routed


def dispatches_route_waiting_owe() -> None:
    """Owe a pass over the waiting dispatches (after a stock feed or a partner changed)."""
    if Dispatch.objects.filter(status=Dispatch.Status.AWAITING_PARTNER).exists():
        with transaction.atomic():
            outbox_task_enqueue(task=ROUTE_WAITING_TASK, args=[])


def dispatch_partner(dispatch: Dispatch) -> Partner:
    """The partner holding the dispatch's order (orders from before routing: the default)."""
    return dispatch.partner or routing.default_partner_ensure()


def dispatch_message(*, dispatch: Dispatch) -> dict[str, Any]:
    """The message for `dispatch`: the same bytes however often it is sent (the gateway
    answers a changed body under a used idempotency key with 422)."""
    prescription = dispatch.prescription
    repeat = None
    if prescription.clinic.jurisdiction == "GB":
        _eps_identifiers_fix(prescription)
        course = prescription_selectors.prescription_repeat_course(prescription=prescription)
        if course is not None:
            origin, issue_number = course
            repeat = fhir.RepeatContext.for_course(
                origin=origin, origin_items=list(origin.items.all()), issue_number=issue_number
            )
    return fhir.encode_prescription(
        prescription,
        message_id=str(dispatch.idempotency_key),
        pharmacy_ods_code=settings.PHARMACY_ODS_CODE,
        timestamp=dispatch.created_at,
        repeat=repeat,
    )


EPS_ID_ATTEMPTS = 5


def _eps_identifiers_fix(prescription: Prescription) -> None:
    """Give a GB prescription its EPS short-form and long-form IDs on its first send.

    The short form carries the clinic's ODS code and the prescription's key as its sequence;
    its random part makes a clash unlikely, and a clash draws again.
    """
    if prescription.eps_prescription_id:
        return
    for _ in range(EPS_ID_ATTEMPTS):
        try:
            short_form_id = prescription_id.short_form_id(
                ods_code=prescription.clinic.ods_code, sequence=prescription.pk
            )
        except prescription_id.PrescriptionIdError as error:
            raise fhir.FhirEncodingError(f"MedicationRequest.groupIdentifier.value: {error}") from None
        long_form_id = uuid.uuid4()
        try:
            fixed = prescriptions.prescription_record_eps_identifiers(
                prescription_id=prescription.pk, short_form_id=short_form_id, long_form_id=long_form_id
            )
        except IntegrityError:
            continue
        if fixed:
            prescription.eps_prescription_id = short_form_id
            prescription.eps_prescription_uuid = long_form_id
        else:  # another send fixed them first: theirs stay
            prescription.refresh_from_db(fields=["eps_prescription_id", "eps_prescription_uuid"])
        return
    raise fhir.FhirEncodingError("MedicationRequest.groupIdentifier.value: no free short-form ID")


_ACKNOWLEDGE_SQL = """
UPDATE pharmacy_dispatch
SET status = %s::text, gateway_order_id = %s::text, acknowledged_at = %s::timestamptz, last_error = ''
WHERE id = %s::bigint AND status = %s::text
RETURNING prescription_id
"""


def dispatch_record_acknowledged(*, dispatch_id: int, order_id: str) -> bool:
    # No savepoint inside a caller's transaction (a gateway webhook's): that caller rolls back
    # whole on any error, it never goes on after one.
    with transaction.atomic(savepoint=False):
        with rows.planned_cursor() as cursor:
            cursor.execute(
                _ACKNOWLEDGE_SQL,
                [
                    Dispatch.Status.ACKNOWLEDGED.value,
                    order_id,
                    timezone.now(),
                    dispatch_id,
                    Dispatch.Status.PENDING.value,
                ],
            )
            row = cursor.fetchone()
        if row is None:
            return False
        prescription_id = row[0]
        moved = prescriptions.prescription_record_acknowledged(
            prescription_id=prescription_id, order_id=order_id
        )
        if not moved and Prescription.objects.filter(pk=prescription_id, status=Status.CANCELLED).exists():
            # Cancelled while the order was in flight: the gateway now holds an order nobody
            # wants, so cancel it there too (the refund already followed the cancellation).
            _gateway_cancellation_open(
                dispatch_id=dispatch_id, reason="Cancelled while the order was in flight"
            )
    return True


def dispatch_dead_letter(
    *, dispatch_id: int, error: str, outcome: dict[str, Any] | None = None
) -> DeadLetter | None:
    """Stop sending: the dispatch waits in the dead-letter queue for an operator. `outcome` is
    the gateway's OperationOutcome, kept with the letter (it names elements, not patients)."""
    with transaction.atomic():
        updated = Dispatch.objects.filter(pk=dispatch_id, status=Dispatch.Status.PENDING).update(
            status=Dispatch.Status.DEAD_LETTERED, last_error=error[:1000]
        )
        if updated != 1:
            return None
        dispatch = Dispatch.objects.get(pk=dispatch_id)
        letter = DeadLetter.objects.create(
            dispatch=dispatch,
            error=error[:1000],
            attempts=dispatch.attempts,
            payload={
                "prescription_id": dispatch.prescription_id,
                "idempotency_key": str(dispatch.idempotency_key),
                **({"operation_outcome": outcome} if outcome else {}),
            },
        )
        prescriptions.prescription_record_dead_lettered(prescription_id=dispatch.prescription_id, error=error)
    logger.warning("dispatch %s dead-lettered after %s attempts", dispatch_id, dispatch.attempts)
    return letter


def dead_letter_replay(*, dead_letter_id: int, actor: str = "") -> bool:
    """Send a dead-lettered dispatch again, with the same idempotency key."""
    with transaction.atomic():
        letter = (
            DeadLetter.objects.select_for_update().filter(pk=dead_letter_id, resolved_at__isnull=True).first()
        )
        if letter is None:
            return False
        reopened = Dispatch.objects.filter(
            pk=letter.dispatch_id, status=Dispatch.Status.DEAD_LETTERED
        ).update(status=Dispatch.Status.PENDING, attempts=0, window_started_at=timezone.now())
        letter.resolved_at = timezone.now()
        letter.resolution = "replayed" if reopened else "stale"
        letter.save(update_fields=["resolved_at", "resolution"])
        if reopened:
            outbox_task_enqueue(task=DISPATCH_SEND_TASK, args=[letter.dispatch_id])
    logger.info("dead letter %s replayed by %s", dead_letter_id, actor or "unknown")
    return bool(reopened)


def dead_letter_lock(*, dead_letter_id: int) -> int | None:
    """Lock an unresolved dead letter for the caller's transaction; its prescription's id, or
    None when it is gone or already resolved."""
    return (
        DeadLetter.objects.select_for_update()
        .filter(pk=dead_letter_id, resolved_at__isnull=True)
        .values_list("dispatch__prescription_id", flat=True)
        .first()
    )


def dead_letter_resolve(*, dead_letter_id: int, resolution: str) -> bool:
    return bool(
        DeadLetter.objects.filter(pk=dead_letter_id, resolved_at__isnull=True).update(
            resolved_at=timezone.now(), resolution=resolution
        )
    )


def dispatches_stale(*, older_than_seconds: int) -> QuerySet[Dispatch]:
    """Pending dispatches nobody has touched for a while (the reconciler re-sends them)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return Dispatch.objects.filter(status=Dispatch.Status.PENDING, updated_at__lt=cutoff)


def dispatches_requeue_stale(*, older_than_seconds: int, limit: int) -> list[int]:
    """Owe the send of pending dispatches nobody has touched for a while; returns their ids.

    The reconciler's safety net for a pending dispatch whose owed send is missing (each send
    is an OutboxTask row, so this finds only rows lost some other way). A second send is
    harmless: the gateway sees the same idempotency key and the acknowledgement is a guarded
    update. Marking the rows touched keeps the next pass from owing them again at once.
    """
    with transaction.atomic():
        ids = list(
            dispatches_stale(older_than_seconds=older_than_seconds)
            .select_for_update(skip_locked=True)
            .order_by("id")
            .values_list("pk", flat=True)[:limit]
        )
        Dispatch.objects.filter(pk__in=ids).update(updated_at=timezone.now())
        for dispatch_id in ids:
            outbox_task_enqueue(task=DISPATCH_SEND_TASK, args=[dispatch_id])
    return ids


# --- Gateway webhooks ---------------------------------------------------------------------


def signature_header_check(*, header: str, tolerance: int) -> None:
    """A well-formed, fresh Gateway-Signature header (before any secret is looked up)."""
    parsed = signing.signature_parse(header)
    if parsed is None:
        raise WebhookRejected("malformed Gateway-Signature header")
    timestamp, _ = parsed
    if abs(time.time() - timestamp) > tolerance:
        raise WebhookRejected("stale Gateway-Signature timestamp")


def signature_check(*, body: bytes, header: str, secrets: list[str], tolerance: int) -> None:
    """The body signed with one of `secrets` (after signature_header_check)."""
    if not signing.signature_verify(header=header, secrets=secrets, body=body, tolerance_seconds=tolerance):
        raise WebhookRejected("bad Gateway-Signature")


def partner_webhook_secret(partner: Partner) -> str:
    """The secret `partner` signs its webhooks with ('' when it has none: nothing verifies)."""
    try:
        return partner_endpoint(partner).webhook_secret
    except PartnerNotConfigured:
        return ""


def _webhook_secrets(partners: list[list[str]]) -> list[str]:
    """The secrets of the webhook partners, from their (code, adapter, base_url)."""
    return sorted(
        {
            secret
            for code, adapter, base_url in partners
            if (secret := partner_webhook_secret(Partner(code=code, adapter=adapter, base_url=base_url)))
        }
    )


EVENT_ID_LENGTH = GatewayWebhookEvent._meta.get_field("event_id").max_length or 80


def _parse_event(body: bytes) -> dict[str, Any]:
    try:
        event = json_loads_bounded(body)
    except ValueError as error:  # also deep nesting, NUL, NaN: never stored, never a 500
        raise WebhookRejected("body is not JSON") from error
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        raise WebhookRejected("event must be an object with data")
    kind = event.get("type")
    if not isinstance(kind, str) or (kind not in prescriptions.PROGRESS and kind not in LIFECYCLE):
        raise WebhookRejected(f"unknown event type {str(event.get('type'))[:40]!r}")
    if not isinstance(event.get("id"), str) or not event["id"]:
        raise WebhookRejected("event id missing")
    if len(event["id"]) > EVENT_ID_LENGTH or len(str(event["data"].get("order_id", ""))) > EVENT_ID_LENGTH:
        raise WebhookRejected(f"event id and order id are at most {EVENT_ID_LENGTH} characters")
    return event


def _parse_event_or_refusal(body: bytes) -> dict[str, Any] | WebhookRejected:
    try:
        return _parse_event(body)
    except WebhookRejected as refusal:
        return refusal


def _stored_payload(event: dict[str, Any]) -> dict[str, Any]:
    """The event as kept: the pharmacy's reason for a refusal lives encrypted on the
    prescription (its status reason), not in clear here."""
    data = {key: value for key, value in event["data"].items() if key != "reason"}
    return {**event, "data": data}


# One round trip for what a webhook needs before it changes anything: every webhook partner's
# (code, adapter, base_url) for the signature check, and the dispatch the event names (by our
# idempotency key, else by the gateway's order id) with the partner holding its order (the
# default partner's row for an order from before routing).
_WEBHOOK_CONTEXT_SQL = """
SELECT w.partners, d.id, d.prescription_id, d.status, p.code, p.adapter, p.base_url
FROM (SELECT array_agg(ARRAY[code, adapter, base_url]) AS partners
      FROM pharmacy_partner WHERE status_by = %(webhook)s::text) AS w
LEFT JOIN LATERAL (
    SELECT id, prescription_id, status, partner_id FROM pharmacy_dispatch
    WHERE %(lookup)s::boolean AND (idempotency_key = %(key)s::uuid OR (gateway_order_id = %(order_id)s::text
                                                       AND gateway_order_id <> ''))
    ORDER BY idempotency_key = %(key)s::uuid DESC NULLS LAST, id
    LIMIT 1
) AS d ON true
LEFT JOIN pharmacy_partner AS p
    ON d.id IS NOT NULL
   AND p.id = COALESCE(d.partner_id, (SELECT id FROM pharmacy_partner WHERE code = %(default)s::text))
"""


class _WebhookDispatch:
    """The few columns of the dispatch a webhook acts on."""

    __slots__ = ("pk", "prescription_id", "status")

    def __init__(self, pk: int, prescription_id: int, status: str) -> None:
        self.pk = pk
        self.prescription_id = prescription_id
        self.status = status


def _webhook_context(
    event: dict[str, Any] | None,
) -> tuple[list[str], _WebhookDispatch | None, Partner | None]:
    """The webhook partners' secrets, the dispatch `event` names and its order's partner."""
    data = event["data"] if event is not None else {}
    key = _uuid_or_none(data.get("idempotency_key"))
    with rows.planned_cursor() as cursor:
        cursor.execute(
            _WEBHOOK_CONTEXT_SQL,
            {
                "webhook": Partner.StatusBy.WEBHOOK.value,
                "lookup": event is not None,
                "key": uuid.UUID(key) if key is not None else None,
                "order_id": str(data.get("order_id", "")),
                "default": DEFAULT_PARTNER_CODE,
            },
        )
        partners, dispatch_id, prescription_id, status, code, adapter, base_url = cursor.fetchone()
    if dispatch_id is None:
        return _webhook_secrets(partners or []), None, None
    dispatch = _WebhookDispatch(dispatch_id, prescription_id, status)
    partner = (
        Partner(code=code, adapter=adapter, base_url=base_url)
        if code is not None
        else routing.default_partner_ensure()
    )
    return _webhook_secrets(partners or []), dispatch, partner


def gateway_webhook_receive(*, body: bytes, signature_header: str) -> str:
    """Verify, de-duplicate and apply one gateway webhook; returns what happened.

    The body is read before its signature is checked only to find the order in the same query
    as the secrets; a bad signature is refused before anything the body says is answered or
    stored.
    """
    tolerance = settings.GATEWAY_WEBHOOK_TOLERANCE_SECONDS
    signature_header_check(header=signature_header, tolerance=tolerance)
    event = _parse_event_or_refusal(body)
    secrets, dispatch, partner = _webhook_context(None if isinstance(event, WebhookRejected) else event)
    signature_check(body=body, header=signature_header, secrets=secrets, tolerance=tolerance)
    if isinstance(event, WebhookRejected):
        raise event
    data = event["data"]
    if dispatch is None or partner is None:
        raise WebhookForUnknownOrder()
    # Signed by some partner, but it must be the one holding this order.
    signature_check(
        body=body, header=signature_header, secrets=[partner_webhook_secret(partner)], tolerance=tolerance
    )
    order_id = str(data.get("order_id", ""))[:80]
    if dispatch.status == Dispatch.Status.PENDING and not order_id:
        raise WebhookRejected("event for an order we have not recorded carries no order_id")
    try:
        with transaction.atomic():
            if dispatch.status == Dispatch.Status.PENDING and event["type"] != "order.acknowledged":
                # The gateway is ahead of us (the worker sending the order died between the
                # gateway's answer and our commit, say): its signed event proves the order
                # exists under our idempotency key, so record the acknowledgement, then apply.
                # Refusing it would lose it for good once the gateway stops retrying.
                dispatch_record_acknowledged(dispatch_id=dispatch.pk, order_id=order_id)
            applied = _apply(dispatch, event["type"], data)
            # Stored last, with its outcome: a redelivery fails on the unique event id here and
            # rolls back whatever it did above, so an event takes effect once.
            rows.insert(
                GatewayWebhookEvent(
                    event_id=event["id"],
                    type=event["type"],
                    order_id=order_id,
                    payload=_stored_payload(event),
                    applied=applied,
                )
            )
    except IntegrityError:
        return "duplicate"
    return "applied" if applied else "ignored"


# The gateway also announces acceptance and may refuse an order it accepted.
LIFECYCLE = frozenset({"order.acknowledged", "order.rejected"})
REJECTION_REASON_LENGTH = 300


def _apply(dispatch: _WebhookDispatch, event_type: str, data: dict[str, Any]) -> bool:
    if event_type == "order.acknowledged":
        return dispatch_record_acknowledged(dispatch_id=dispatch.pk, order_id=str(data.get("order_id", "")))
    if event_type == "order.rejected":
        reason = str(data.get("reason") or "Rejected by the pharmacy.")[:REJECTION_REASON_LENGTH]
        return prescriptions.prescription_record_rejected_by_pharmacy(
            prescription_id=dispatch.prescription_id, reason=reason
        )
    return prescriptions.prescription_record_progress(
        prescription_id=dispatch.prescription_id,
        gateway_event_type=event_type,
        tracking_number=str(data.get("tracking_number", ""))[:60],
    )


def _uuid_or_none(value: object) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


# --- Compensation: cancelling an acknowledged order -----------------------------------------------


def gateway_cancellation_request(
    *, prescription_id: int, reason: str, actor: str = ""
) -> GatewayCancellation | None:
    """Start cancelling an acknowledged order at the gateway; None if it is not acknowledged.

    Repeating the request returns the first one. The prescription stays acknowledged until
    the gateway confirms; the refund and notifications follow its prescription.cancelled event.
    """
    under_way = GatewayCancellation.objects.filter(
        dispatch__prescription_id=prescription_id,
        status__in=[GatewayCancellation.Status.PENDING, GatewayCancellation.Status.CANCELLED],
    ).first()
    if under_way is not None:
        # A repeated request (perhaps racing the gateway's confirmation) gets the first one.
        return under_way
    with transaction.atomic():
        dispatch = (
            Dispatch.objects.select_for_update()
            .filter(
                prescription_id=prescription_id,
                status=Dispatch.Status.ACKNOWLEDGED,
                prescription__status=Status.ACKNOWLEDGED,
            )
            .first()
        )
        if dispatch is None:
            return None
        cancellation, created = _gateway_cancellation_open(
            dispatch_id=dispatch.pk, reason=reason, actor=actor
        )
        if created:
            prescriptions.prescription_record_event(
                prescription_id=prescription_id,
                event_type="prescription.cancellation_requested",
                payload={"cancellation_id": cancellation.pk},
                actor=actor,
            )
    return cancellation


def gateway_cancellation_reason(*, cancellation_id: int | None) -> str:
    """Why the clinic asked to cancel (stored encrypted on the cancellation), or ""."""
    if cancellation_id is None:
        return ""
    return (
        GatewayCancellation.objects.filter(pk=cancellation_id).values_list("reason", flat=True).first() or ""
    )


def _gateway_cancellation_open(
    *, dispatch_id: int, reason: str, actor: str = ""
) -> tuple[GatewayCancellation, bool]:
    """The one cancellation of a dispatch, its send owed (in the caller's transaction) when new."""
    cancellation, created = GatewayCancellation.objects.get_or_create(
        dispatch_id=dispatch_id, defaults={"reason": reason[:500], "requested_by": actor[:120]}
    )
    if created:
        outbox_task_enqueue(task=CANCELLATION_SEND_TASK, args=[cancellation.pk])
    return cancellation, created


def gateway_cancellation_send(*, cancellation_id: int, gateway: Gateway | None = None) -> str:
    """Send one pending cancellation; raises GatewayUnavailable when the caller should retry."""
    cancellation = (
        GatewayCancellation.objects.select_related("dispatch__partner")
        .filter(pk=cancellation_id, status=GatewayCancellation.Status.PENDING)
        .first()
    )
    if cancellation is None:
        return "not-pending"
    partner = dispatch_partner(cancellation.dispatch)
    circuit_to_close = circuit_check(partner=partner.code)
    GatewayCancellation.objects.filter(pk=cancellation_id).update(attempts=F("attempts") + 1)
    try:
        (gateway or adapter_for(partner)).order_cancel(
            order_id=cancellation.dispatch.gateway_order_id, idempotency_key=str(cancellation.idempotency_key)
        )
    except OrderAlreadyDispensed as error:
        _cancellation_end(cancellation, GatewayCancellation.Status.REFUSED, str(error))
        return "refused"
    except GatewayRejected as error:
        _cancellation_end(cancellation, GatewayCancellation.Status.FAILED, str(error))
        return "failed"
    except GatewayUnavailable as error:
        circuit_record_failure(partner=partner.code)
        attempts = GatewayCancellation.objects.values_list("attempts", flat=True).get(pk=cancellation_id)
        GatewayCancellation.objects.filter(pk=cancellation_id).update(last_error=str(error)[:500])
        if _retries_spent(attempts=attempts, window_started_at=cancellation.created_at):
            _cancellation_end(cancellation, GatewayCancellation.Status.FAILED, str(error))
            return "failed"
        raise
    if circuit_to_close:
        circuit_record_success(partner=partner.code)
    with transaction.atomic():
        done = GatewayCancellation.objects.filter(
            pk=cancellation_id, status=GatewayCancellation.Status.PENDING
        ).update(status=GatewayCancellation.Status.CANCELLED, completed_at=timezone.now(), last_error="")
        if done:
            prescriptions.prescription_record_cancelled_at_pharmacy(
                prescription_id=cancellation.dispatch.prescription_id,
                reason=cancellation.reason,
                actor=cancellation.requested_by,
            )
    return "cancelled" if done else "not-pending"


def _cancellation_end(cancellation: GatewayCancellation, status: str, error: str) -> None:
    """The gateway will not cancel: record it; the event opens a staff-queue entry (billing)."""
    with transaction.atomic():
        ended = GatewayCancellation.objects.filter(
            pk=cancellation.pk, status=GatewayCancellation.Status.PENDING
        ).update(status=status, completed_at=timezone.now(), last_error=error[:500])
        if ended:
            prescriptions.prescription_record_event(
                prescription_id=cancellation.dispatch.prescription_id,
                event_type="prescription.cancellation_refused",
                payload={
                    "requested_by": cancellation.requested_by,
                    "cancellation_id": cancellation.pk,
                    "outcome": status,
                },
                actor="gateway",
            )
    logger.warning("gateway cancellation %s ended %s", cancellation.pk, status)


# --- Asking the gateway about orders that went quiet ----------------------------------------------

# Where an order may still move at the gateway, in order, and the event that announces each step.
WITH_THE_PHARMACY = (Status.ACKNOWLEDGED, Status.DISPENSED, Status.SHIPPED)
STEPS = (
    (Status.DISPENSED, "order.dispensed"),
    (Status.SHIPPED, "order.shipped"),
    (Status.DELIVERED, "order.delivered"),
)
STEP_RANK: dict[str, int] = {
    Status.ACKNOWLEDGED: 0,
    Status.DISPENSED: 1,
    Status.SHIPPED: 2,
    Status.DELIVERED: 3,
}


def dispatches_quiet(*, older_than_seconds: int, checked_before_seconds: int) -> QuerySet[Dispatch]:
    """Acknowledged orders whose prescription has not moved for `older_than_seconds`, not asked
    about in the last `checked_before_seconds`."""
    now = timezone.now()
    return (
        Dispatch.objects.filter(
            status=Dispatch.Status.ACKNOWLEDGED,
            prescription__status__in=WITH_THE_PHARMACY,
            prescription__updated_at__lt=now - timedelta(seconds=older_than_seconds),
        )
        .exclude(status_checked_at__gte=now - timedelta(seconds=checked_before_seconds))
        .exclude(gateway_order_id="")
    )


def orders_poll_stale(*, gateway: Gateway | None = None, limit: int = 100) -> dict[str, int]:
    """Ask the gateway where each quiet order is (webhooks lost, a partner restarted) and apply
    its answer; raise an OrderAlert to the operators for one that stays quiet past
    ORDER_ESCALATE_AFTER_SECONDS, or that we cannot ask about or make sense of. A beat task."""
    quiet = list(
        dispatches_quiet(
            older_than_seconds=settings.ORDER_POLL_AFTER_SECONDS,
            checked_before_seconds=settings.ORDER_POLL_INTERVAL_SECONDS,
        )
        .select_related("prescription", "partner")
        .order_by("status_checked_at", "id")[:limit]
    )
    report = _orders_poll(quiet, gateway=gateway)
    if report["advanced"] or report["alerted"]:
        logger.warning("orders polled at the gateway: %s", report)
    return report


def partner_orders_poll(*, gateway: Gateway | None = None, limit: int = 200) -> dict[str, int]:
    """Ask partners that report status only when asked (status_by=polling) where each order in
    flight is, at most once per PARTNER_POLL_AFTER_SECONDS each, and apply the answers. A beat task."""
    checked_before = timezone.now() - timedelta(seconds=settings.PARTNER_POLL_AFTER_SECONDS)
    in_flight = list(
        Dispatch.objects.filter(
            status=Dispatch.Status.ACKNOWLEDGED,
            partner__status_by=Partner.StatusBy.POLLING,
            prescription__status__in=WITH_THE_PHARMACY,
        )
        .exclude(status_checked_at__gte=checked_before)
        .exclude(gateway_order_id="")
        .select_related("prescription", "partner")
        .order_by("status_checked_at", "id")[:limit]
    )
    return _orders_poll(in_flight, gateway=gateway)


def _orders_poll(dispatches: list[Dispatch], *, gateway: Gateway | None) -> dict[str, int]:
    Dispatch.objects.filter(pk__in=[dispatch.pk for dispatch in dispatches]).update(
        status_checked_at=timezone.now()
    )
    report = {"polled": len(dispatches), "advanced": 0, "alerted": 0}
    clients: dict[str, Gateway] = {}
    for dispatch in dispatches:
        partner = dispatch_partner(dispatch)
        try:
            client = gateway or clients.get(partner.code) or adapter_for(partner)
        except PartnerNotConfigured as error:
            outcome = _order_alert(dispatch, str(error), "")
        else:
            clients[partner.code] = client
            outcome = _order_poll(dispatch, client)
        report[outcome] = report.get(outcome, 0) + 1
    return report


def _order_poll(dispatch: Dispatch, gateway: Gateway) -> str:
    prescription = dispatch.prescription
    try:
        answer = gateway.order_status(order_id=dispatch.gateway_order_id)
    except OrderUnknown:
        return _order_alert(dispatch, "The gateway has no such order.", "unknown")
    except GatewayRejected as error:
        return _order_alert(dispatch, f"The gateway refused the status request: {error}", "")
    except GatewayUnavailable as error:
        if _quiet_too_long(prescription):
            return _order_alert(dispatch, f"No progress, and the gateway cannot be asked: {error}", "")
        return "unanswered"
    if _order_status_apply(dispatch, answer):
        return "advanced"
    if answer.status in STEP_RANK and not _quiet_too_long(prescription):
        return "unchanged"
    reason = {
        "cancelled": "The gateway cancelled an order we did not ask it to cancel.",
    }.get(answer.status, f"No progress at the gateway (it says {answer.status[:20]}).")
    if answer.status == "cancelled" and GatewayCancellation.objects.filter(dispatch=dispatch).exists():
        return "unchanged"  # our own cancellation: its send records it
    return _order_alert(dispatch, reason, answer.status)


def _quiet_too_long(prescription: Prescription) -> bool:
    return timezone.now() - prescription.updated_at > timedelta(seconds=settings.ORDER_ESCALATE_AFTER_SECONDS)


def _order_status_apply(dispatch: Dispatch, answer: OrderStatus) -> bool:
    """Walk the prescription on to where the gateway says the order is, one step (one event,
    one notification) at a time; True if it moved."""
    prescription_id = dispatch.prescription_id
    if answer.status == "rejected":
        return prescriptions.prescription_record_rejected_by_pharmacy(
            prescription_id=prescription_id, reason="Rejected by the pharmacy (reported when asked)."
        )
    target = STEP_RANK.get(answer.status)
    current = STEP_RANK.get(dispatch.prescription.status)
    if target is None or current is None or target <= current:
        return False
    moved = False
    for status, event_type in STEPS[current:target]:
        tracking = answer.tracking_number[:60] if status == Status.SHIPPED else ""
        moved |= prescriptions.prescription_record_progress(
            prescription_id=prescription_id, gateway_event_type=event_type, tracking_number=tracking
        )
    return moved


def _order_alert(dispatch: Dispatch, reason: str, gateway_status: str) -> str:
    """Open the dispatch's alert for the operators (at most one open at a time)."""
    try:
        with transaction.atomic():
            OrderAlert.objects.create(
                dispatch=dispatch, reason=reason[:300], gateway_status=gateway_status[:20]
            )
    except IntegrityError:
        return "already-alerted"
    logger.warning("order of dispatch %s raised to the operators: %s", dispatch.pk, reason[:120])
    return "alerted"


def order_alert_resolve(*, alert_id: int) -> bool:
    return bool(
        OrderAlert.objects.filter(pk=alert_id, resolved_at__isnull=True).update(resolved_at=timezone.now())
    )


# --- Retry budget and the partner's circuit breaker ------------------------------------------------


def _retries_spent(*, attempts: int, window_started_at: datetime) -> bool:
    """A transient failure ends the retries once the retry window has passed (or, when
    GATEWAY_MAX_ATTEMPTS is set above 0, once that many attempts were made)."""
    window = timedelta(seconds=settings.GATEWAY_RETRY_WINDOW_SECONDS)
    capped = settings.GATEWAY_MAX_ATTEMPTS > 0 and attempts >= settings.GATEWAY_MAX_ATTEMPTS
    return capped or timezone.now() - window_started_at >= window


# The partner's circuit and, unless it is open, the dispatch's attempt counted, in one statement.
# updated_at is the reconciler's "last touched" mark.
_ATTEMPT_SQL = (
    "WITH circuit AS ("
    f' SELECT open_until, failures, times_opened FROM "{PartnerCircuit._meta.db_table}"'
    " WHERE partner = %(partner)s),"
    " attempt AS ("
    f' UPDATE "{Dispatch._meta.db_table}" SET attempts = attempts + 1, updated_at = %(now)s'
    " WHERE id = %(dispatch)s AND NOT EXISTS (SELECT FROM circuit WHERE open_until > %(now)s)"
    " RETURNING id)"
    " SELECT circuit.open_until, circuit.failures, circuit.times_opened, EXISTS (SELECT FROM attempt)"
    " FROM (SELECT) AS one LEFT JOIN circuit ON true"
)


def _attempt_unless_circuit_open(*, dispatch_id: int, partner: str) -> bool:
    """Count an attempt of the dispatch, unless the partner's circuit is open (then raise
    RetryLater, as circuit_check does); True when the partner's answer has a circuit to close."""
    with rows.planned_cursor() as cursor:
        cursor.execute(_ATTEMPT_SQL, {"partner": partner, "now": timezone.now(), "dispatch": dispatch_id})
        open_until, failures, times_opened, attempted = cursor.fetchone()
    if not attempted and open_until is not None:
        _circuit_wait(partner, open_until)
    return bool(failures or times_opened)


def _circuit_wait(partner: str, open_until: datetime) -> NoReturn:
    # Spread the waiting sends over a few seconds so they do not all probe at once.
    wait = (open_until - timezone.now()).total_seconds() + random.uniform(0, 5)
    raise RetryLater(wait, f"{partner} circuit open")


def circuit_check(*, partner: str) -> bool:
    """Raise RetryLater while the partner's circuit is open: the send waits, unattempted.

    Otherwise True when an answer from the partner has something to close (failures counted or
    a pause to reset), so a send to a partner with a clean circuit writes nothing to it (a
    failure another send records meanwhile stays counted, as if this answer had come first)."""
    state = (
        PartnerCircuit.objects.filter(partner=partner)
        .values_list("open_until", "failures", "times_opened")
        .first()
    )
    if state is None:
        return False
    open_until, failures, times_opened = state
    if open_until is not None and open_until > timezone.now():
        _circuit_wait(partner, open_until)
    return bool(failures or times_opened)


def circuit_record_failure(*, partner: str) -> None:
    with transaction.atomic():
        circuit, _ = PartnerCircuit.objects.select_for_update().get_or_create(partner=partner)
        circuit.failures += 1
        if circuit.failures >= settings.GATEWAY_CIRCUIT_FAILURES and not (
            circuit.open_until and circuit.open_until > timezone.now()
        ):
            pause = min(
                settings.GATEWAY_CIRCUIT_OPEN_MAX_SECONDS,
                settings.GATEWAY_CIRCUIT_OPEN_SECONDS * (2 ** min(circuit.times_opened, 20)),
            )
            circuit.open_until = timezone.now() + timedelta(seconds=pause)
            circuit.times_opened += 1
            logger.warning("%s circuit opened for %.0fs after %s failures", partner, pause, circuit.failures)
        circuit.save()


def circuit_record_success(*, partner: str) -> None:
    PartnerCircuit.objects.filter(partner=partner).exclude(failures=0, times_opened=0).update(
        failures=0, times_opened=0, open_until=None
    )
