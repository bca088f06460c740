"""`manage.py rebuild_projections`: the read model is what the event log says it is."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from events.models import Event
from prescriptions import services
from prescriptions.models import Prescription, Status
from tests.events.test_outbox import prescriptions_created
from tests.pharmacy.factories import approved_prescription

pytestmark = pytest.mark.django_db


def journey_states(clinic_a, paracetamol) -> list[Prescription]:  # type: ignore[no-untyped-def]
    """Prescriptions in several states, made through the services only."""
    received = prescriptions_created(1)[0]
    paid = approved_prescription(clinic_a, paracetamol)
    shipped = approved_prescription(clinic_a, paracetamol)
    services.prescription_record_acknowledged(prescription_id=shipped.pk, order_id="ord_1")
    services.prescription_record_progress(
        prescription_id=shipped.pk, gateway_event_type="order.shipped", tracking_number="TRK123"
    )
    return [received, paid, shipped]


def rebuild(*arguments: str) -> tuple[str, int]:
    from io import StringIO

    out = StringIO()
    try:
        call_command("rebuild_projections", *arguments, stdout=out)
    except SystemExit as exit:
        return out.getvalue(), int(exit.code or 0)
    return out.getvalue(), 0


def test_rebuilding_from_the_events_gives_the_same_read_model(clinic_a, paracetamol):
    journey_states(clinic_a, paracetamol)
    before = list(Prescription.objects.order_by("pk").values_list("pk", "status", "tracking_number"))

    output, code = rebuild("--fix")

    assert code == 0
    assert output == "0 difference(s), 0 fixed\n"
    assert list(Prescription.objects.order_by("pk").values_list("pk", "status", "tracking_number")) == before
    assert [status for _, status, _ in before] == [Status.RECEIVED, Status.PAID, Status.SHIPPED]
    assert before[2][2] == "TRK123"


def test_a_drifted_read_model_is_reported_and_left_alone_without_fix(clinic_a, paracetamol):
    _, paid, shipped = journey_states(clinic_a, paracetamol)
    Prescription.objects.filter(pk=paid.pk).update(status=Status.DELIVERED)
    Prescription.objects.filter(pk=shipped.pk).update(tracking_number="")
    events_before = Event.objects.count()

    output, code = rebuild()

    assert code == 1
    assert output.splitlines() == [
        f"prescription {paid.pk} status: stored 'delivered', events say 'paid'",
        f"prescription {shipped.pk} tracking_number: stored '', events say 'TRK123'",
        "2 difference(s), 0 fixed",
    ]
    assert Prescription.objects.get(pk=paid.pk).status == Status.DELIVERED
    assert Event.objects.count() == events_before


def test_fix_repairs_each_difference_once_and_records_an_event(clinic_a, paracetamol):
    _, paid, _ = journey_states(clinic_a, paracetamol)
    Prescription.objects.filter(pk=paid.pk).update(status=Status.DELIVERED)

    output, code = rebuild("--fix")
    again, code_again = rebuild("--fix")

    assert code == 0
    assert output.splitlines()[-1] == "1 difference(s), 1 fixed"
    assert Prescription.objects.get(pk=paid.pk).status == Status.PAID
    repaired = Event.objects.filter(aggregate_id=paid.pk, type="prescription.projection_repaired")
    assert [event.payload for event in repaired] == [
        {"field": "status", "stored": "delivered", "rebuilt": "paid"}
    ]
    assert (again, code_again) == ("0 difference(s), 0 fixed\n", 0)
