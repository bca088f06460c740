"""The statements a dispatch costs: its creation when the prescription is paid (the saga's
dispatch consumer) and its send (routing, the circuit, the attempt, the acknowledgement).

Counted inside the test's transaction, so each atomic block shows as a SAVEPOINT/RELEASE pair
(in the worker, the dispatch consumer's blocks sit inside consume_once's transaction too).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pharmacy import services
from pharmacy.gateway import OrderAcknowledgement, OrderStatus
from pharmacy.models import Dispatch, PartnerCircuit
from prescriptions.models import Prescription, Status
from saga import holds
from tests.outbox import owed_tasks
from tests.pharmacy.factories import approved_prescription
from tests.queries import verbs

pytestmark = pytest.mark.django_db


class AcceptingGateway:
    """A gateway that acknowledges every order it is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, Any], str]] = []

    def order_submit(self, *, bundle: dict[str, Any], idempotency_key: str) -> OrderAcknowledgement:
        self.sent.append((bundle, idempotency_key))
        return OrderAcknowledgement(order_id=f"order-{len(self.sent)}", replayed=False)

    def order_cancel(self, *, order_id: str, idempotency_key: str) -> None:
        raise AssertionError("not expected")

    def order_status(self, *, order_id: str) -> OrderStatus:
        raise AssertionError("not expected")


def test_creating_the_dispatch_of_a_paid_prescription_inserts_it_in_one_statement(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)

    with CaptureQueriesContext(connection) as created:
        holds.dispatch_unless_held(prescription_id=prescription.pk)

    dispatch = Dispatch.objects.get(prescription=prescription)
    assert owed_tasks() == [(services.DISPATCH_SEND_TASK, [dispatch.pk])]
    # The prescription with its items and their medications; the dispatch, inserted unless it
    # exists; the owed send (events.outbox_task_enqueue: one upsert).
    assert verbs(created) == ["SELECT", "INSERT", "INSERT"]

    with CaptureQueriesContext(connection) as repeated:
        holds.dispatch_unless_held(prescription_id=prescription.pk)

    # A repeat finds the dispatch and owes nothing more.
    assert verbs(repeated) == ["SELECT", "INSERT", "SELECT"]
    assert Dispatch.objects.get(prescription=prescription).pk == dispatch.pk
    assert owed_tasks() == [(services.DISPATCH_SEND_TASK, [dispatch.pk])]


def test_sending_a_private_prescription_routes_it_and_records_the_acknowledgement(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    dispatch = services.dispatch_create(prescription_id=prescription.pk)
    assert dispatch is not None
    gateway = AcceptingGateway()

    with CaptureQueriesContext(connection) as sent:
        assert services.dispatch_send(dispatch_id=dispatch.pk, gateway=gateway) == "acknowledged"

    assert verbs(sent) == [
        # The dispatch with its prescription, parties, partner, items and medications.
        "SELECT",
        # The prescription's EPS identifiers, fixed on its first send (in a savepoint only
        # because this test runs inside a transaction; a worker's send runs the UPDATE alone).
        "SAVEPOINT",
        "UPDATE",
        "RELEASE",
        # Routing: every partner with its load and stock, in one statement; then the choice
        # with the prescription's lock and clinic, and the routed event.
        "SELECT",
        "SAVEPOINT",
        "WITH",
        "WITH",
        "RELEASE",
        # The partner's circuit read and, as it is not open, the attempt counted (clean: nothing
        # to close afterwards).
        "WITH",
        # The acknowledgement, the prescription's move and its event.
        "UPDATE",
        "UPDATE",
        "WITH",
    ]
    assert Prescription.objects.get(pk=prescription.pk).status == Status.ACKNOWLEDGED
    dispatch.refresh_from_db()
    assert (dispatch.status, dispatch.attempts, dispatch.gateway_order_id) == (
        Dispatch.Status.ACKNOWLEDGED,
        1,
        "order-1",
    )
    assert dispatch.partner is not None
    assert dispatch.partner.code == "gateway"
    ((bundle, key),) = gateway.sent
    assert key == str(dispatch.idempotency_key)
    # The message names the prescription by the EPS identifiers it was given.
    prescription.refresh_from_db()
    assert prescription.eps_prescription_id
    request = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "MedicationRequest"
    )
    assert request["groupIdentifier"]["value"] == prescription.eps_prescription_id
    extension = request["groupIdentifier"]["extension"][0]["valueIdentifier"]
    assert extension["value"] == str(prescription.eps_prescription_uuid)


def test_a_send_to_a_partner_with_failures_counted_closes_its_circuit(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    dispatch = services.dispatch_create(prescription_id=approved_prescription(clinic_a, paracetamol).pk)
    assert dispatch is not None
    PartnerCircuit.objects.create(partner="gateway", failures=2)

    assert services.dispatch_send(dispatch_id=dispatch.pk, gateway=AcceptingGateway()) == "acknowledged"

    circuit = PartnerCircuit.objects.get(partner="gateway")
    assert (circuit.failures, circuit.times_opened, circuit.open_until) == (0, 0, None)


def test_a_send_reads_what_the_orm_would_and_writes_the_same_message(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)
    first = prescription.items.get()
    first.pk = None
    first.quantity = 56
    first.save()  # a second line
    dispatch = services.dispatch_create(prescription_id=prescription.pk)
    assert dispatch is not None

    loaded = services._load_for_sending(dispatch.pk)
    expected = (
        Dispatch.objects.select_related(
            "prescription__clinic", "prescription__patient", "prescription__prescriber", "partner"
        )
        .prefetch_related("prescription__items__medication")
        .get(pk=dispatch.pk)
    )

    assert loaded is not None
    with CaptureQueriesContext(connection) as reads:
        read = loaded.prescription
        assert read.patient.family_name == expected.prescription.patient.family_name
        assert (read.clinic, read.prescriber, loaded.partner) == (
            expected.prescription.clinic,
            expected.prescription.prescriber,
            None,
        )
        items = list(read.items.all())
        assert [(item.pk, item.quantity, item.medication.code) for item in items] == [
            (item.pk, item.quantity, item.medication.code) for item in expected.prescription.items.all()
        ]
        assert len(items) == 2
    assert reads.captured_queries == []  # all of it read already
    assert services.dispatch_message(dispatch=loaded) == services.dispatch_message(dispatch=expected)
    Prescription.objects.filter(pk=prescription.pk).update(status=Status.CANCELLED)
    assert services._load_for_sending(dispatch.pk) is not None  # pending, whatever the prescription
    Dispatch.objects.filter(pk=dispatch.pk).update(status=Dispatch.Status.ACKNOWLEDGED)
    assert services._load_for_sending(dispatch.pk) is None
