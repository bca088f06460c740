"""A transition is one guarded UPDATE that hands back the status it left, then its event."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from events.models import Event
from prescriptions import services
from prescriptions.models import Prescription, Status
from tests.pharmacy.factories import approved_prescription
from tests.queries import verbs

pytestmark = pytest.mark.django_db


def test_a_transition_in_the_callers_transaction_is_two_statements_without_a_savepoint(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)  # paid

    with transaction.atomic(), CaptureQueriesContext(connection) as statements:
        moved = services.prescription_transition(
            prescription_id=prescription.pk,
            to=Status.CANCELLED,
            from_statuses=services.CANCELLABLE,
            event_type="prescription.cancelled",
            actor="test",
            status_reason="Patient moved away",
        )

    assert moved
    assert verbs(statements) == ["UPDATE", "WITH"]
    stored = Prescription.objects.get(pk=prescription.pk)
    assert (stored.status, stored.status_reason) == (Status.CANCELLED, "Patient moved away")
    with connection.cursor() as cursor:  # encrypted at rest, as QuerySet.update writes it
        cursor.execute(
            "SELECT status_reason FROM prescriptions_prescription WHERE id = %s", [prescription.pk]
        )
        assert "Patient moved away" not in cursor.fetchone()[0]
    event = Event.objects.get(aggregate_id=prescription.pk, type="prescription.cancelled")
    assert (event.payload, event.clinic_id, event.actor) == (
        {"from": Status.PAID, "to": Status.CANCELLED},
        clinic_a.clinic.pk,
        "test",
    )


def test_a_transition_from_a_state_it_may_not_leave_changes_nothing(clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    prescription = approved_prescription(clinic_a, paracetamol)  # paid
    before = Event.objects.filter(aggregate_id=prescription.pk).count()

    with CaptureQueriesContext(connection) as statements:
        moved = services.prescription_record_progress(
            prescription_id=prescription.pk, gateway_event_type="order.delivered", tracking_number="T1"
        )

    assert not moved
    assert len(statements.captured_queries) == 1  # the UPDATE whose guard matched nothing
    stored = Prescription.objects.get(pk=prescription.pk)
    assert (stored.status, stored.tracking_number) == (Status.PAID, "")
    assert Event.objects.filter(aggregate_id=prescription.pk).count() == before
