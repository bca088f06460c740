"""The event log: append-only in the database, ordered per aggregate, one event per change."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.utils import Error as DatabaseError

from common.errors import Conflict
from events.models import Event
from events.services import event_record
from prescriptions import services
from prescriptions.models import Prescription, Status
from prescriptions.services import TRANSITIONS, prescription_transition
from tests.conftest import ClinicSetup
from tests.patients.factories import ClinicFactory, PatientFactory
from tests.prescriptions.factories import PrescriberFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic(db) -> ClinicSetup:  # type: ignore[no-untyped-def]
    # Service-level tests need no API client; an OAuth application costs a password hash.
    clinic = ClinicFactory(name="Clinic")
    return ClinicSetup(clinic=clinic, api=None, prescriber=PrescriberFactory(clinic=clinic), token="")


def a_prescription(setup, medication) -> Prescription:  # type: ignore[no-untyped-def]
    return services.prescription_create(
        clinic=setup.clinic,
        patient=PatientFactory(clinic=setup.clinic),
        prescriber=setup.prescriber,
        items=[
            {
                "medication": medication,
                "dose_text": "One a day",
                "quantity": 28,
                "unit": "tablet",
                "days_supply": 28,
                "quantity_words": "twenty eight",
            }
        ],
    )


def events_of(prescription: Prescription) -> list[Event]:
    return list(
        Event.objects.filter(aggregate_type="prescription", aggregate_id=prescription.pk).order_by("sequence")
    )


def snapshot(event: Event) -> dict:
    return Event.objects.filter(pk=event.pk).values().get()


def a_registered_patient_event(setup) -> Event:  # type: ignore[no-untyped-def]
    # patient.registered has no consumers, so no outbox row protects it from an ORM delete:
    # whatever refuses the delete below is the database trigger itself.
    with transaction.atomic():
        return event_record(
            aggregate_type="patient",
            aggregate_id=PatientFactory(clinic=setup.clinic).pk,
            clinic_id=setup.clinic.pk,
            type="patient.registered",
        )


# --- append-only ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda event: Event.objects.filter(pk=event.pk).update(type="tampered"), id="orm-update"
        ),
        pytest.param(lambda event: Event.objects.filter(pk=event.pk).delete(), id="orm-delete"),
        pytest.param(lambda event: Event.objects.all().delete(), id="orm-delete-all"),
        pytest.param(
            lambda event: connection.cursor().execute(
                "UPDATE events_event SET payload = '{\"forged\": true}' WHERE id = %s", [event.pk]
            ),
            id="sql-update",
        ),
        pytest.param(
            lambda event: connection.cursor().execute("DELETE FROM events_event WHERE id = %s", [event.pk]),
            id="sql-delete",
        ),
    ],
)
def test_the_database_refuses_to_change_or_delete_an_event(clinic, change):
    event = a_registered_patient_event(clinic)
    before = snapshot(event)

    with pytest.raises(DatabaseError, match="events_event is append-only"), transaction.atomic():
        change(event)

    assert snapshot(event) == before
    assert Event.objects.count() == 1


def test_an_event_with_an_outbox_row_cannot_be_deleted_either(clinic, paracetamol):
    prescription = a_prescription(clinic, paracetamol)
    (event,) = events_of(prescription)
    before = snapshot(event)

    with pytest.raises(DatabaseError), transaction.atomic():
        connection.cursor().execute("DELETE FROM events_event WHERE id = %s", [event.pk])

    assert snapshot(event) == before


@pytest.mark.django_db(transaction=True)
def test_recording_an_event_outside_a_transaction_is_refused(clinic):
    with pytest.raises(RuntimeError, match="inside the state change's transaction"):
        event_record(aggregate_type="patient", aggregate_id=1, type="patient.registered")

    assert Event.objects.count() == 0


# --- ordering -------------------------------------------------------------------------------


def test_the_events_of_a_prescription_are_numbered_one_two_three_in_order(clinic, methylphenidate):
    prescription = a_prescription(clinic, methylphenidate)
    services.prescription_run_checks(prescription_id=prescription.pk)
    services.prescription_cancel(
        clinic=clinic.clinic, prescription_id=prescription.pk, reason="Changed treatment"
    )

    events = events_of(prescription)

    assert [(event.sequence, event.type) for event in events] == [
        (1, "prescription.received"),
        (2, "prescription.awaiting_pharmacist"),
        (3, "prescription.cancelled"),
    ]
    assert [event.payload.get("to") for event in events] == ["received", "awaiting_pharmacist", "cancelled"]
    # The reason is kept encrypted on the prescription, never in the event log.
    assert events[2].payload == {"from": "awaiting_pharmacist", "to": "cancelled"}
    assert Prescription.objects.get(pk=prescription.pk).status_reason == "Changed treatment"
    assert all(event.clinic_id == clinic.clinic.pk for event in events)


def test_sequences_are_counted_per_aggregate(clinic, paracetamol):
    first = a_prescription(clinic, paracetamol)
    second = a_prescription(clinic, paracetamol)
    services.prescription_run_checks(prescription_id=second.pk)

    assert [event.sequence for event in events_of(first)] == [1]
    assert [event.sequence for event in events_of(second)] == [1, 2]


# --- one event per status change --------------------------------------------------------------

ALLOWED = sorted((source, target) for source, targets in TRANSITIONS.items() for target in targets)
REFUSED = sorted(
    (source, target)
    for source in TRANSITIONS
    for target in Status.values
    if target not in TRANSITIONS[source]
)


def put_in(prescription: Prescription, status: str) -> None:
    # Test setup only: jump straight to the state under test without its history.
    Prescription.objects.filter(pk=prescription.pk).update(status=status)


@pytest.mark.parametrize(("source", "target"), ALLOWED, ids=[f"{s}->{t}" for s, t in ALLOWED])
def test_every_allowed_status_change_records_exactly_one_event_with_from_and_to(
    clinic, paracetamol, source, target
):  # type: ignore[no-untyped-def]
    prescription = a_prescription(clinic, paracetamol)
    put_in(prescription, source)

    moved = prescription_transition(
        prescription_id=prescription.pk, to=target, event_type=f"prescription.{target}", actor="test"
    )

    assert moved is True
    prescription.refresh_from_db()
    assert prescription.status == target
    events = events_of(prescription)
    assert len(events) == 2
    assert events[1].sequence == 2
    assert events[1].type == f"prescription.{target}"
    assert events[1].payload == {"from": source, "to": target}
    assert events[1].actor == "test"


@pytest.mark.parametrize(("source", "target"), REFUSED, ids=[f"{s}->{t}" for s, t in REFUSED])
def test_every_refused_status_change_records_nothing_and_changes_nothing(clinic, paracetamol, source, target):  # type: ignore[no-untyped-def]
    prescription = a_prescription(clinic, paracetamol)
    put_in(prescription, source)
    before = Prescription.objects.filter(pk=prescription.pk).values().get()

    moved = prescription_transition(
        prescription_id=prescription.pk,
        to=target,
        event_type=f"prescription.{target}",
        status_reason="should not be written",
    )

    assert moved is False
    assert Prescription.objects.filter(pk=prescription.pk).values().get() == before
    assert [event.type for event in events_of(prescription)] == ["prescription.received"]


def test_a_transition_limited_to_some_sources_refuses_the_others(clinic, paracetamol):
    prescription = a_prescription(clinic, paracetamol)
    put_in(prescription, Status.APPROVED)

    moved = prescription_transition(
        prescription_id=prescription.pk,
        to=Status.CANCELLED,
        event_type="prescription.cancelled",
        from_statuses=frozenset({Status.RECEIVED}),
    )

    assert moved is False
    assert Prescription.objects.get(pk=prescription.pk).status == Status.APPROVED
    assert len(events_of(prescription)) == 1


def test_cancelling_a_delivered_prescription_is_refused_and_records_nothing(clinic, paracetamol):
    prescription = a_prescription(clinic, paracetamol)
    put_in(prescription, Status.DELIVERED)

    with pytest.raises(Conflict, match="cannot be cancelled") as refused:
        services.prescription_cancel(clinic=clinic.clinic, prescription_id=prescription.pk, reason="late")

    assert refused.value.code == "not-cancellable"
    prescription.refresh_from_db()
    assert prescription.status == Status.DELIVERED
    assert prescription.status_reason == ""
    assert len(events_of(prescription)) == 1
