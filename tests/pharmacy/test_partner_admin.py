"""The back office for partners: operators add and change them; dispatches show the routing."""

from __future__ import annotations

import pytest

from events.models import OutboxTask
from pharmacy import routing, services
from pharmacy.models import Dispatch, Partner
from support import roles
from tests.pharmacy.factories import approved_prescription
from tests.support.factories import StaffFactory

pytestmark = pytest.mark.django_db

ADD = "/admin/pharmacy/partner/add/"


@pytest.fixture
def operator_client(client):  # type: ignore[no-untyped-def]
    client.force_login(StaffFactory(role=roles.OPERATOR))
    return client


def form(**overrides: str) -> dict[str, str]:
    return {
        "code": "east",
        "name": "East Pharmacy",
        "is_active": "on",
        "adapter": "fhir_gateway",
        "status_by": "webhook",
        "countries": "US",
        "us_states": "NY,nj",
        "controlled_schedules": "us:ii",
        "therapy_areas": "",
        "fee_per_item_minor": "150",
        "price_list": '{"349594": 90}',
        "capacity": "40",
        **overrides,
    }


def test_an_operator_adds_a_partner(operator_client):  # type: ignore[no-untyped-def]
    response = operator_client.post(ADD, form())

    assert response.status_code == 302
    partner = Partner.objects.get(code="east")
    assert (partner.countries, partner.us_states, partner.controlled_schedules) == (
        ["US"],
        ["NY", "NJ"],
        ["US:II"],
    )
    assert (partner.price_list, partner.capacity) == ({"349594": 90}, 40)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("countries", "FR", "Scriptline dispenses in GB and US only, not FR."),
        ("us_states", "NY,N1", "US states are two-letter codes, e.g. NY."),
        (
            "controlled_schedules",
            "II",
            "Schedules name their country, e.g. &quot;GB:2&quot; or &quot;US:II&quot;.",
        ),
        ("price_list", '{"349594": -1}', "A price list maps product codes to whole prices in minor units."),
        ("capacity", "0", "partner_capacity_positive"),
    ],
)
def test_a_bad_partner_is_refused_with_a_message_and_nothing_saved(operator_client, field, value, message):  # type: ignore[no-untyped-def]
    response = operator_client.post(ADD, form(**{field: value}))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Partner.objects.filter(code="east").exists()


def test_saving_a_partner_owes_routing_again_when_a_dispatch_waits(operator_client, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    dispatch = services.dispatch_create(prescription_id=approved_prescription(clinic_a, paracetamol).pk)
    Dispatch.objects.filter(pk=dispatch.pk).update(status=Dispatch.Status.AWAITING_PARTNER)

    operator_client.post(ADD, form())

    assert OutboxTask.objects.filter(task=services.ROUTE_WAITING_TASK).count() == 1


def test_the_dispatch_page_shows_the_partner_chosen_and_why_others_were_passed_over(
    operator_client, clinic_a, paracetamol
):  # type: ignore[no-untyped-def]
    Partner.objects.create(
        code="east", name="East", base_url="http://127.0.0.1:9", countries=["US"], us_states=["NY"]
    )
    dispatch = services.dispatch_create(prescription_id=approved_prescription(clinic_a, paracetamol).pk)
    routing.dispatch_route(dispatch=services._load_for_sending(dispatch.pk))

    page = operator_client.get(f"/admin/pharmacy/dispatch/{dispatch.pk}/change/").content.decode()

    assert "chosen: gateway" in page
    assert "east: does not dispense in GB" in page


def test_route_again_sends_a_waiting_dispatch_once_a_partner_takes_it(operator_client, clinic_a, paracetamol):  # type: ignore[no-untyped-def]
    Partner.objects.filter(pk=routing.default_partner_ensure().pk).update(is_active=False)
    dispatch = services.dispatch_create(prescription_id=approved_prescription(clinic_a, paracetamol).pk)
    assert routing.dispatch_route(dispatch=services._load_for_sending(dispatch.pk)) is None
    assert Dispatch.objects.get(pk=dispatch.pk).status == Dispatch.Status.AWAITING_PARTNER
    Partner.objects.filter(pk=routing.default_partner_ensure().pk).update(is_active=True)

    operator_client.post(
        "/admin/pharmacy/dispatch/", {"action": "route_again", "_selected_action": [dispatch.pk]}
    )

    dispatch.refresh_from_db()
    assert (dispatch.status, dispatch.partner.code) == (Dispatch.Status.PENDING, "gateway")


def test_the_default_partner_is_the_gateway_everywhere_and_comes_back_if_its_row_is_lost():
    migrated = Partner.objects.values(*routing.DEFAULT_PARTNER).get(code="gateway")
    assert migrated == routing.DEFAULT_PARTNER  # the migration and the code agree

    Partner.objects.filter(code="gateway").delete()
    assert routing.default_partner_ensure().us_states == list(routing.US_STATES)
