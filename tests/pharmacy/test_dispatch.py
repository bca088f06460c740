"""Dispatch to the gateway over real HTTP (the simulator runs as its own process)."""

from __future__ import annotations

import json

import pytest

from events.models import OutboxTask
from patients.models import Clinic
from pharmacy import services
from pharmacy.fhir.eps.prescription_id import short_form_id_is_valid
from pharmacy.gateway import GatewayUnavailable
from pharmacy.models import DeadLetter, Dispatch
from pharmacy.tasks import backoff_seconds
from prescriptions.models import Prescription, Status
from sandbox import eps_rules
from tests.outbox import owed_tasks
from tests.pharmacy.factories import approved_prescription, force_status
from tests.queries import verbs

pytestmark = pytest.mark.django_db


def create_dispatch(prescription: Prescription) -> Dispatch:
    dispatch = services.dispatch_create(prescription_id=prescription.pk)
    # The send is owed in the dispatch's own transaction, published by the relay.
    assert owed_tasks() == [(services.DISPATCH_SEND_TASK, [dispatch.pk])]
    return dispatch


def test_an_approved_prescription_is_sent_once_and_acknowledged(gateway, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = create_dispatch(prescription)

    assert services.dispatch_send(dispatch_id=dispatch.pk) == "acknowledged"
    assert services.dispatch_send(dispatch_id=dispatch.pk) == "not-pending"

    dispatch.refresh_from_db()
    prescription.refresh_from_db()
    assert dispatch.status == Dispatch.Status.ACKNOWLEDGED
    assert dispatch.attempts == 1
    assert prescription.status == Status.ACKNOWLEDGED
    stats = gateway.stats()
    assert stats["orders"] == 1
    assert stats["orders_by_key"] == {str(dispatch.idempotency_key): dispatch.gateway_order_id}


def test_creating_the_dispatch_twice_keeps_one_dispatch_and_one_send(gateway, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    first = create_dispatch(prescription)

    second = services.dispatch_create(prescription_id=prescription.pk)

    assert second.pk == first.pk
    assert owed_tasks() == [(services.DISPATCH_SEND_TASK, [first.pk])]
    assert Dispatch.objects.filter(prescription=prescription).count() == 1


def test_a_send_repeated_after_a_lost_acknowledgement_creates_no_second_order(gateway, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = create_dispatch(prescription)
    # An earlier attempt reached the gateway but its answer was lost (timeout, killed worker):
    from django.conf import settings

    from pharmacy.adapters.http import HttpGateway

    bundle = services.dispatch_message(dispatch=services._load_for_sending(dispatch.pk))
    adapter = HttpGateway(base_url=settings.GATEWAY_URL, api_key=settings.GATEWAY_API_KEY, timeout=10.0)
    adapter.order_submit(bundle=bundle, idempotency_key=str(dispatch.idempotency_key))

    assert services.dispatch_send(dispatch_id=dispatch.pk) == "acknowledged"

    stats = gateway.stats()
    assert stats["orders"] == 1
    assert stats["duplicates"] == 1
    assert Prescription.objects.get(pk=prescription.pk).status == Status.ACKNOWLEDGED


def test_gateway_errors_are_retried_then_dead_lettered_then_replayed_exactly_once(
    gateway, clinic_a, paracetamol
):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = create_dispatch(prescription)
    gateway.control(error_rate=1)

    for _ in range(2):
        with pytest.raises(GatewayUnavailable):
            services.dispatch_send(dispatch_id=dispatch.pk)
    assert services.dispatch_send(dispatch_id=dispatch.pk) == "dead-lettered"

    dispatch.refresh_from_db()
    assert dispatch.status == Dispatch.Status.DEAD_LETTERED
    assert dispatch.attempts == 3
    letter = DeadLetter.objects.get(dispatch=dispatch)
    assert letter.attempts == 3
    assert "503" in letter.error
    assert Prescription.objects.get(pk=prescription.pk).status == Status.DEAD_LETTERED
    assert gateway.stats()["orders"] == 0

    gateway.control(error_rate=0)
    OutboxTask.objects.all().delete()  # the sends ran
    assert services.dead_letter_replay(dead_letter_id=letter.pk) is True
    assert owed_tasks() == [(services.DISPATCH_SEND_TASK, [dispatch.pk])]
    assert services.dead_letter_replay(dead_letter_id=letter.pk) is False
    assert services.dispatch_send(dispatch_id=dispatch.pk) == "acknowledged"

    assert gateway.stats()["orders"] == 1
    assert Prescription.objects.get(pk=prescription.pk).status == Status.ACKNOWLEDGED


def test_a_gateway_that_refuses_the_order_dead_letters_it_without_retrying(
    gateway, clinic_a, paracetamol, settings
):  # type: ignore[no-untyped-def]
    settings.GATEWAY_API_KEY = "wrong-key"
    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = create_dispatch(prescription)

    assert services.dispatch_send(dispatch_id=dispatch.pk) == "dead-lettered"

    dispatch.refresh_from_db()
    assert dispatch.attempts == 1
    assert "401" in dispatch.last_error
    assert gateway.stats()["orders"] == 0


def test_an_unreachable_gateway_is_a_retryable_error(clinic_a, paracetamol, settings):  # type: ignore[no-untyped-def]
    settings.GATEWAY_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = create_dispatch(prescription)

    with pytest.raises(GatewayUnavailable):
        services.dispatch_send(dispatch_id=dispatch.pk)

    dispatch.refresh_from_db()
    assert dispatch.status == Dispatch.Status.PENDING
    assert "unreachable" in dispatch.last_error


def test_a_controlled_drug_without_pharmacist_approval_never_reaches_the_gateway(
    gateway, clinic_a, methylphenidate
):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, methylphenidate)
    assert prescription.status == Status.AWAITING_PHARMACIST
    force_status(prescription, Status.PAID)  # a bug skipping the pharmacist (then paid)

    dispatch = services.dispatch_create(prescription_id=prescription.pk)
    # and even if a send were enqueued for it by hand:
    Dispatch.objects.filter(pk=dispatch.pk).update(status=Dispatch.Status.PENDING)
    outcome = services.dispatch_send(dispatch_id=dispatch.pk)

    assert owed_tasks() == []
    assert outcome == "refused"
    assert gateway.stats()["requests"] == 0


def test_a_cancelled_prescription_is_not_sent(gateway, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = create_dispatch(prescription)
    from prescriptions.services import prescription_cancel

    prescription_cancel(clinic=clinic_a.clinic, prescription_id=prescription.pk, reason="stopped")

    assert services.dispatch_send(dispatch_id=dispatch.pk) == "not-sendable"
    assert gateway.stats()["requests"] == 0


@pytest.mark.parametrize("retries", range(0, 15))
def test_backoff_grows_exponentially_with_jitter_and_stays_under_the_cap(retries, settings):  # type: ignore[no-untyped-def]
    settings.GATEWAY_RETRY_BACKOFF_SECONDS = 2
    settings.GATEWAY_RETRY_BACKOFF_MAX_SECONDS = 600
    ceiling = min(600, 2 * 2**retries)

    delays = [backoff_seconds(retries) for _ in range(50)]

    assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
    assert len(set(delays)) > 1  # jittered, not a fixed schedule


# --- NHS EPS: what the gateway refuses under EPS rules is terminal ---------------------------


def test_a_gb_message_the_gateway_refuses_under_eps_rules_is_dead_lettered_at_once_with_its_outcome(
    gateway, clinic_a, paracetamol
):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    # The record changed after its checks: an NHS number whose check digit is wrong, which the
    # encoder passes on and EPS refuses.
    patient = prescription.patient
    patient.nhs_number = "9434765918"
    patient.save(update_fields=["nhs_number"])
    dispatch = create_dispatch(prescription)

    outcome = services.dispatch_send(dispatch_id=dispatch.pk)

    assert outcome == "dead-lettered"
    dispatch.refresh_from_db()
    assert dispatch.status == Dispatch.Status.DEAD_LETTERED
    assert dispatch.attempts == 1  # not retried: a refusal is terminal
    letter = DeadLetter.objects.get(dispatch=dispatch)
    assert letter.error == "gateway refused the order: 400 The NHS number fails its Modulus 11 check."
    assert letter.payload["operation_outcome"] == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "value",
                "diagnostics": "The NHS number fails its Modulus 11 check.",
                "expression": ["Patient.identifier"],
                "details": ["INVALID_VALUE"],
            }
        ],
    }
    assert "9434765918" not in json.dumps(letter.payload)
    assert Prescription.objects.get(pk=prescription.pk).status == Status.DEAD_LETTERED
    stats = gateway.stats()
    assert (stats["orders"], stats["refused_by_eps_rules"], stats["requests"]) == (0, 1, 1)
    [received] = gateway.messages()
    assert received["identifier"] == {
        "system": "https://tools.ietf.org/html/rfc4122",
        "value": str(dispatch.idempotency_key),
    }


def test_a_gb_dispatch_fixes_its_eps_prescription_id_once_and_every_send_carries_it(
    gateway, clinic_a, paracetamol
):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = create_dispatch(prescription)
    gateway.control(error_rate=1)

    with pytest.raises(GatewayUnavailable):
        services.dispatch_send(dispatch_id=dispatch.pk)
    prescription.refresh_from_db()
    first_id, first_uuid = prescription.eps_prescription_id, prescription.eps_prescription_uuid
    gateway.control(error_rate=0)
    assert services.dispatch_send(dispatch_id=dispatch.pk) == "acknowledged"

    prescription.refresh_from_db()
    assert (prescription.eps_prescription_id, prescription.eps_prescription_uuid) == (first_id, first_uuid)
    assert short_form_id_is_valid(first_id)
    assert first_id[7:13] == clinic_a.clinic.ods_code.rjust(6, "0")
    [received] = gateway.messages()  # the 503 was answered before the body was read as a message
    group = received["entry"][1]["resource"]["groupIdentifier"]
    assert group["value"] == first_id
    assert group["extension"][0]["valueIdentifier"]["value"] == str(first_uuid)
    assert eps_rules.check_message(received) == []


def test_a_gb_clinic_without_an_ods_code_is_dead_lettered_before_sending(gateway, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    Clinic.objects.filter(pk=clinic_a.clinic.pk).update(ods_code="")
    dispatch = create_dispatch(prescription)

    assert services.dispatch_send(dispatch_id=dispatch.pk) == "dead-lettered"

    letter = DeadLetter.objects.get(dispatch=dispatch)
    assert letter.error == (
        "cannot encode: MedicationRequest.groupIdentifier.value: the ODS code must be 1 to 6 letters or digits"
    )
    assert Prescription.objects.get(pk=prescription.pk).eps_prescription_id == ""
    assert gateway.stats()["requests"] == 0


def test_an_eps_error_response_is_kept_as_the_refusals_outcome(settings):  # type: ignore[no-untyped-def]
    """EPS's own published error response (tests/fixtures), served by a stub HTTP server."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from pathlib import Path

    from pharmacy.adapters.http import HttpGateway
    from pharmacy.gateway import GatewayRejected

    body = (
        Path(__file__).resolve().parents[1]
        / "fixtures"
        / "fhir-examples"
        / "eps-api__spec_errors_example-a-validation-error-missing-field_Response-FhirError.json"
    ).read_bytes()

    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(400)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        gateway = HttpGateway(base_url=f"http://127.0.0.1:{server.server_port}", api_key="k", timeout=5)
        with pytest.raises(GatewayRejected) as raised:
            gateway.order_submit(bundle={"resourceType": "Bundle"}, idempotency_key="key-1")
    finally:
        server.shutdown()
        server.server_close()

    assert raised.value.outcome == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "value", "details": ["MISSING_FIELD"]}],
    }


@pytest.mark.django_db(transaction=True)
def test_recording_the_acknowledgement_is_one_transaction_of_three_statements(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from events.models import Event

    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = services.dispatch_create(prescription_id=prescription.pk)

    with CaptureQueriesContext(connection) as statements:
        assert services.dispatch_record_acknowledged(dispatch_id=dispatch.pk, order_id="ord_9")

    # The dispatch's guarded UPDATE ... RETURNING, the prescription's, and its event.
    assert verbs(statements) == [
        "BEGIN",
        "UPDATE",
        "UPDATE",
        "WITH",
        "COMMIT",
    ]
    dispatch.refresh_from_db()
    assert (dispatch.status, dispatch.gateway_order_id, dispatch.last_error) == ("acknowledged", "ord_9", "")
    assert dispatch.acknowledged_at is not None
    acknowledged = Event.objects.get(aggregate_id=prescription.pk, type="prescription.acknowledged")
    assert acknowledged.payload == {"from": "paid", "to": "acknowledged", "order_id": "ord_9"}
    # Again: the guard matches nothing, one statement in a transaction that changes nothing.
    assert not services.dispatch_record_acknowledged(dispatch_id=dispatch.pk, order_id="ord_10")
    dispatch.refresh_from_db()
    assert dispatch.gateway_order_id == "ord_9"


@pytest.mark.django_db(transaction=True)
def test_routing_waits_for_the_prescriptions_lock_and_numbers_its_event_after_a_concurrent_one(  # type: ignore[no-untyped-def]
    clinic_a, paracetamol
):
    """Routing's assignment takes the prescription's row lock in its own statement (the event
    log's order per prescription rests on it): an event another transaction is appending holds
    it back, and the routed event is numbered after that one, not beside it."""
    import threading

    from django.db import connections, transaction

    from events.models import Event
    from pharmacy import routing
    from prescriptions import services as prescription_services

    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = services.dispatch_create(prescription_id=prescription.pk)
    partner = routing.default_partner_ensure()
    decision = routing.Decision(chosen=partner.code, ranked=(), passed_over={})
    holding, release, routed = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def append_and_hold() -> None:
        try:
            with transaction.atomic():
                prescription_services.prescription_record_event(
                    prescription_id=prescription.pk, event_type="prescription.note_added"
                )
                holding.set()
                release.wait(10)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)
        finally:
            connections.close_all()

    def assign() -> None:
        try:
            routing.dispatch_assign(dispatch_id=dispatch.pk, decision=decision, partner=partner)
            routed.set()
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)
        finally:
            connections.close_all()

    holder = threading.Thread(target=append_and_hold)
    holder.start()
    assert holding.wait(10)
    router = threading.Thread(target=assign)
    router.start()
    assert not routed.wait(1), "routing did not wait for the prescription's lock"
    release.set()
    holder.join(10)
    router.join(10)

    assert errors == []
    assert routed.is_set()
    ordered = list(
        Event.objects.filter(aggregate_type="prescription", aggregate_id=prescription.pk)
        .order_by("sequence")
        .values_list("sequence", "type")
    )
    assert [sequence for sequence, _type in ordered] == list(range(1, len(ordered) + 1))
    assert [event_type for _sequence, event_type in ordered][-2:] == [
        "prescription.note_added",
        "prescription.routed",
    ]


def test_an_eps_prescription_id_another_prescription_holds_is_drawn_again(
    gateway, clinic_a, paracetamol, monkeypatch
):  # type: ignore[no-untyped-def]
    from pharmacy.fhir.eps import prescription_id

    first = approved_prescription(clinic_a, paracetamol)
    second = approved_prescription(clinic_a, paracetamol)
    # The first holds the ID the second's first draw makes (sequences wrap modulo 16^5, so two
    # prescriptions of a clinic can draw the same ID).
    taken = prescription_id.short_form_id(
        ods_code=clinic_a.clinic.ods_code, sequence=second.pk, random_part="ABCDEF"
    )
    Prescription.objects.filter(pk=first.pk).update(eps_prescription_id=taken)
    draws = iter(["abcdef", "012345"])
    monkeypatch.setattr(prescription_id.secrets, "token_hex", lambda _n: next(draws))

    dispatch = create_dispatch(second)
    assert services.dispatch_send(dispatch_id=dispatch.pk) == "acknowledged"

    second.refresh_from_db()
    assert second.eps_prescription_id != taken
    assert second.eps_prescription_id.startswith("012345-")
    assert Prescription.objects.get(pk=first.pk).eps_prescription_id == taken
    [received] = gateway.messages()
    assert received["entry"][1]["resource"]["groupIdentifier"]["value"] == second.eps_prescription_id


def test_eps_identifiers_are_fixed_once_and_a_clash_leaves_the_callers_transaction_usable(
    clinic_a, paracetamol
):  # type: ignore[no-untyped-def]
    import uuid

    from django.db import IntegrityError, transaction

    from prescriptions import services as prescriptions

    first = approved_prescription(clinic_a, paracetamol)
    second = approved_prescription(clinic_a, paracetamol)
    one, two = uuid.uuid4(), uuid.uuid4()
    assert prescriptions.prescription_record_eps_identifiers(
        prescription_id=first.pk, short_form_id="AAAAAA-A00000-00000X", long_form_id=one
    )
    assert not prescriptions.prescription_record_eps_identifiers(
        prescription_id=first.pk, short_form_id="BBBBBB-A00000-00000X", long_form_id=two
    )
    with transaction.atomic():
        with pytest.raises(IntegrityError):
            prescriptions.prescription_record_eps_identifiers(
                prescription_id=second.pk, short_form_id="AAAAAA-A00000-00000X", long_form_id=two
            )
        assert prescriptions.prescription_record_eps_identifiers(
            prescription_id=second.pk, short_form_id="CCCCCC-A00000-00000X", long_form_id=two
        )
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.eps_prescription_id, first.eps_prescription_uuid) == ("AAAAAA-A00000-00000X", one)
    assert (second.eps_prescription_id, second.eps_prescription_uuid) == ("CCCCCC-A00000-00000X", two)
