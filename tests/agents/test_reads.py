"""The MCP tools' reads in process: the tenant path (row-level security included), constant
query counts, and events in plain words."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from accounts.authentication import BearerRefused
from agents import reads
from agents.server import clinic_scoped_read
from events.models import Event
from prescriptions.models import Prescription
from tests.patients.factories import PatientFactory
from tests.prescriptions.factories import scenario


def read_in_scope(token: str, read: Any, scopes: list[str] | None = None, **arguments: Any) -> Any:
    return clinic_scoped_read(
        token=token,
        scopes=scopes or [],
        read=read,
        arguments=arguments,
        remote_addr="192.0.2.1",
        request_id="mcp-1",
    )


def make_prescriptions(setup, count: int) -> list[Prescription]:  # type: ignore[no-untyped-def]
    return [
        scenario(
            clinic=setup.clinic,
            patient_object=PatientFactory(clinic=setup.clinic),
            prescriber_object=setup.prescriber,
        )
        for _ in range(count)
    ]


@pytest.mark.django_db
def test_a_call_runs_as_the_tenant_role_and_sees_only_its_clinics_rows(clinic_a, clinic_b, formulary):  # type: ignore[no-untyped-def]
    make_prescriptions(clinic_a, 1)
    make_prescriptions(clinic_b, 2)

    def unfiltered(*, caller: reads.Caller) -> tuple[str, str, int, int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user, current_setting('app.clinic_id')")
            role, clinic_id = cursor.fetchone()
        # No clinic filter here: row-level security alone narrows what is visible.
        return role, clinic_id, Prescription.objects.count(), Event.objects.count()

    role, clinic_id, prescriptions, events = read_in_scope(clinic_a.token, unfiltered)

    assert (role, clinic_id) == ("scriptline_tenant", str(clinic_a.clinic.pk))
    assert prescriptions == 1
    assert events == Event.objects.filter(clinic_id=clinic_a.clinic.pk).count() > 0
    # The scope ends with the call: the test's own connection is back on the system path.
    assert Prescription.objects.count() == 3


@pytest.mark.django_db
def test_an_unknown_token_or_one_short_of_scope_reads_nothing(clinic_a):  # type: ignore[no-untyped-def]
    called = []

    def spy(*, caller: reads.Caller) -> None:
        called.append(caller)

    with pytest.raises(BearerRefused, match="not valid"):
        read_in_scope("no-such-token", spy)
    with pytest.raises(BearerRefused, match="lacks the scope billing:read"):
        read_in_scope(clinic_a.token, spy, scopes=["billing:read"])
    assert called == []


@pytest.mark.django_db
def test_listing_takes_the_same_number_of_queries_for_two_or_ten_prescriptions(  # type: ignore[no-untyped-def]
    clinic_a, formulary, django_assert_max_num_queries
):
    make_prescriptions(clinic_a, 2)

    def list_page() -> int:
        page = read_in_scope(
            clinic_a.token,
            reads.prescriptions_list,
            status=None,
            patient_id=None,
            issued_from=None,
            issued_to=None,
            page=1,
            page_size=20,
        )
        return len(page.prescriptions)

    list_page()  # the first call also stamps the client's last use
    with django_assert_max_num_queries(100) as small:
        assert list_page() == 2
    make_prescriptions(clinic_a, 8)
    with django_assert_max_num_queries(100) as large:
        assert list_page() == 10

    assert len(large.captured_queries) == len(small.captured_queries)


@pytest.mark.django_db
def test_events_read_in_plain_words_without_their_other_payload():  # type: ignore[no-untyped-def]
    transition = Event(
        type="prescription.rejected",
        payload={"from": "received", "to": "rejected", "reason": "Interaction", "note": "internal"},
    )
    shipped = Event(type="prescription.shipped", payload={"tracking_number": "SIM1"})
    review = Event(type="prescription.pharmacist_approved", payload={"decision": "approved", "review_id": 3})

    assert reads.event_text(transition) == "Received → Rejected; reason: Interaction"
    assert reads.event_text(shipped) == "Shipped; tracking number: SIM1"
    assert reads.event_text(review) == "Pharmacist approved; decision: approved"
