"""The branded admin index with each role's work first, and the operator dashboard: its figures,
thresholds, charts, in-place refresh, replay, and a fixed number of queries."""

from __future__ import annotations

import datetime
import re

import pytest
from django.utils import timezone

from events.models import ClinicWebhookEndpoint, Event, WebhookDelivery
from pharmacy.models import DeadLetter, Dispatch, OrderAlert
from pharmacy.services import DISPATCH_SEND_TASK, dispatch_create
from prescriptions.models import Prescription, Status
from support import dashboard, roles
from support.models import Enquiry
from support.services import staff_assign_clinic
from tests.events.factories import WebhookDeliveryFactory
from tests.outbox import owed_tasks
from tests.patients.factories import ClinicFactory
from tests.support.factories import (
    EnquiryFactory,
    StaffClient,
    StaffFactory,
    dead_lettered_prescription,
    paid_prescription,
    pharmacist_create,
    shipped_prescription,
)

pytestmark = pytest.mark.django_db


def logged_in(user) -> StaffClient:  # type: ignore[no-untyped-def]
    client = StaffClient()
    client.force_login(user)
    return client


def work_count(body: str, key: str) -> int:
    match = re.search(rf'data-work="{key}">\s*<a href="[^"]*"><span class="my-work-count">(\d+)</span>', body)
    assert match, f"no {key} in my work"
    return int(match.group(1))


# --- The index ----------------------------------------------------------------------------------


def test_the_back_office_is_branded_scriptline():
    body = logged_in(StaffFactory(role=roles.OPERATOR)).get("/admin/").content.decode()

    assert "<title>Your work | Scriptline back office</title>" in body
    assert '<div id="site-name"><a href="/admin/">Scriptline back office</a></div>' in body
    assert "Django administration" not in body


def test_the_login_page_is_branded_too(client):
    body = client.get("/admin/login/").content.decode()

    assert "Scriptline back office" in body
    assert "Django" not in body


def test_a_pharmacist_sees_the_queue_count_first_and_their_work_grouped(formulary):
    from tests.prescriptions.test_admin import awaiting

    awaiting()
    awaiting()
    body = logged_in(pharmacist_create()).get("/admin/").content.decode()

    assert work_count(body, "pharmacist_queue") == 2
    assert body.index('id="my-work-title"') < body.index("role-section role-pharmacist")
    section = body[body.index("role-section role-pharmacist") :]
    assert section.index("Pharmacist queue") < section.index("Prescriptions")
    assert "dead letters" not in body


def test_support_sees_open_and_overdue_enquiries_of_their_clinics_only():
    clinic = ClinicFactory()
    user = StaffFactory(role=roles.SUPPORT)
    staff_assign_clinic(user=user, clinic=clinic)
    EnquiryFactory(patient__clinic=clinic, due_at=timezone.now() - datetime.timedelta(hours=1), assignee=user)
    EnquiryFactory(patient__clinic=clinic, due_at=timezone.now() + datetime.timedelta(hours=1))
    EnquiryFactory()  # another clinic's

    body = logged_in(user).get("/admin/").content.decode()

    assert work_count(body, "open_enquiries") == 2
    assert "1 overdue, 1 assigned to you" in body
    assert 'class="my-work-item is-urgent" data-work="open_enquiries"' in body
    assert "role-section role-support" in body


def test_an_operator_sees_dead_letters_and_failing_webhooks_first(formulary):
    dead_lettered_prescription()
    body = logged_in(StaffFactory(role=roles.OPERATOR)).get("/admin/").content.decode()

    assert work_count(body, "dead_letters") == 1
    assert work_count(body, "failing_webhooks") == 0
    assert '<a class="nav-dashboard" href="/admin/dashboard/">Dashboard</a>' in body


def test_finance_sees_the_claims_first_and_no_patient_work():
    body = logged_in(StaffFactory(role=roles.FINANCE)).get("/admin/").content.decode()

    section = body[body.index("role-section role-finance") :]
    assert section.index("Claim batches") < section.index("Payments")
    assert "NHS charge rates" in body
    assert "open_enquiries" not in body
    assert "pharmacist_queue" not in body


@pytest.mark.parametrize(
    ("role", "name"),
    [
        (roles.OPERATOR, "Webhook deliveries"),
        (roles.FINANCE, "Stripe events"),
        (roles.FINANCE, "NHS charges"),
        (roles.ADMIN, "TOTP devices"),
        (roles.ADMIN, "Sign-in lockouts"),
        (roles.ADMIN, "Patient record access log"),
    ],
)
def test_models_are_named_as_staff_say_them(role, name):
    body = logged_in(StaffFactory(role=role)).get("/admin/").content.decode()

    assert name in body
    assert "deliverys" not in body.lower()


def test_the_two_factor_app_is_named_for_staff():
    body = logged_in(StaffFactory(role=roles.ADMIN)).get("/admin/otp_totp/").content.decode()

    assert "Two-factor devices" in body
    assert "Otp_Totp" not in body


def test_support_sees_patient_names_in_the_prescription_list_and_the_read_is_recorded(formulary):
    from audit.models import PatientAccess

    prescription = paid_prescription()
    user = StaffFactory(role=roles.SUPPORT)
    staff_assign_clinic(user=user, clinic=prescription.clinic)

    body = logged_in(user).get("/admin/prescriptions/prescription/").content.decode()
    operator_body = (
        logged_in(StaffFactory(role=roles.OPERATOR))
        .get("/admin/prescriptions/prescription/")
        .content.decode()
    )

    patient = prescription.patient
    assert f"{patient.given_name} {patient.family_name} (#{patient.pk})" in body
    assert patient.family_name not in operator_body
    assert list(PatientAccess.objects.values_list("patient_id", "action", "staff_user_id")) == [
        (patient.pk, "list", user.pk)
    ]


# --- The dashboard ------------------------------------------------------------------------------


def failing_delivery(
    prescription: Prescription, *, status: str = WebhookDelivery.Status.FAILED
) -> WebhookDelivery:
    endpoint, _ = ClinicWebhookEndpoint.objects.get_or_create(
        clinic=prescription.clinic, defaults={"url": "https://clinic.example/hook", "secret": "s"}
    )
    event = Event.objects.filter(aggregate_id=prescription.pk).last()
    return WebhookDeliveryFactory(
        endpoint=endpoint, event=event, aggregate_id=prescription.pk, sequence=event.sequence,
        payload={"id": f"evt_{event.pk}"}, status=status, attempts=3, last_error="HTTP 500",
    )  # fmt: skip


def test_the_dashboard_shows_the_figures_and_turns_tiles_red_over_their_thresholds(formulary, settings):
    settings.DASHBOARD_THRESHOLDS = {
        **settings.DASHBOARD_THRESHOLDS,
        "dead_letters": 0,
        "failing_webhooks": 5,
    }
    _, letter = dead_lettered_prescription()
    delivered = shipped_prescription()
    failing_delivery(delivered)

    response = logged_in(StaffFactory(role=roles.OPERATOR)).get("/admin/dashboard/")
    body = response.content.decode()

    tiles = dict(
        re.findall(r'<div class="tile( tile-red)?" data-tile="(\w+)">', body)[i][::-1] for i in range(7)
    )
    assert response.status_code == 200
    assert tiles["dead_letters"] == " tile-red"
    assert tiles["failing_webhooks"] == ""
    assert f'data-dead-letter="{letter.pk}"' in body
    assert 'aria-label="Prescriptions by status"' in body
    assert 'aria-label="Received and delivered per hour, last 24 hours"' in body
    assert 'aria-label="Celery queue depths"' in body
    assert '<script src="/static/support/dashboard.js" defer></script>' in body
    assert response["Content-Security-Policy"].startswith("default-src 'self'")
    assert "<script>" not in body


def test_a_threshold_set_higher_keeps_its_tile_calm(formulary, settings):
    settings.DASHBOARD_THRESHOLDS = {
        **settings.DASHBOARD_THRESHOLDS,
        "dead_letters": 3,
        "oldest_dead_letter_minutes": 60,
    }
    dead_lettered_prescription()

    (tile,) = [tile for tile in dashboard.tiles(dashboard.pipeline_snapshot()) if tile.key == "dead_letters"]

    assert (tile.value, tile.is_red) == ("1", False)


def test_the_oldest_wait_for_a_pharmacist_turns_red_past_its_threshold(formulary, settings):
    from tests.prescriptions.test_admin import awaiting

    awaiting()
    calm = [
        tile for tile in dashboard.tiles(dashboard.pipeline_snapshot()) if tile.key == "awaiting_pharmacist"
    ][0]
    settings.DASHBOARD_THRESHOLDS = {**settings.DASHBOARD_THRESHOLDS, "oldest_awaiting_pharmacist_minutes": 0}

    late = [
        tile for tile in dashboard.tiles(dashboard.pipeline_snapshot()) if tile.key == "awaiting_pharmacist"
    ][0]

    assert (calm.is_red, late.is_red) == (False, True)
    assert (late.value, late.detail) == ("1", "oldest waiting under a minute")


def test_the_snapshot_counts_the_funnel_stuck_work_and_stage_times(formulary, settings):
    settings.RECONCILE_STALE_SECONDS = 60
    stuck = paid_prescription()
    Prescription.objects.filter(pk=stuck.pk).update(updated_at=timezone.now() - datetime.timedelta(minutes=5))
    shipped_prescription()

    snapshot = dashboard.pipeline_snapshot()

    assert (snapshot.by_status[Status.PAID], snapshot.by_status[Status.SHIPPED]) == (1, 1)
    assert snapshot.stuck_prescriptions == 1
    assert {stage.stage for stage in snapshot.stage_durations} >= {
        "received",
        "approved",
        "paid",
        "acknowledged",
    }
    assert all(stage.p95_seconds >= stage.p50_seconds >= 0 for stage in snapshot.stage_durations)
    assert sum(row["received"] for row in snapshot.throughput) == 2
    assert len(snapshot.throughput) == 24


def test_the_dashboard_reads_a_fixed_number_of_queries_however_much_there_is(
    formulary, django_assert_max_num_queries
):
    client = logged_in(StaffFactory(role=roles.OPERATOR))
    dead_lettered_prescription()
    with django_assert_max_num_queries(40) as few:
        client.get("/admin/dashboard/tiles/")
    for _ in range(5):
        dead_lettered_prescription()
        failing_delivery(shipped_prescription())
        EnquiryFactory()

    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get("/admin/dashboard/tiles/")

    assert response.content.decode().count("data-dead-letter=") == 6


def test_the_tiles_fragment_is_what_the_page_refreshes_in_place(formulary):
    dead_lettered_prescription()

    response = logged_in(StaffFactory(role=roles.OPERATOR)).get("/admin/dashboard/tiles/")
    body = response.content.decode()

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert "<html" not in body
    assert 'data-tile="dead_letters"' in body


def test_an_operator_replays_a_dead_letter_from_the_dashboard(formulary):
    prescription, letter = dead_lettered_prescription()
    user = StaffFactory(role=roles.OPERATOR)

    response = logged_in(user).post(f"/admin/dashboard/dead-letters/{letter.pk}/replay/")

    letter.refresh_from_db()
    assert response.status_code == 302
    assert (letter.resolution, letter.resolved_at is not None) == ("replayed", True)
    dispatch = Dispatch.objects.get(prescription=prescription)
    assert dispatch.status == Dispatch.Status.PENDING
    assert owed_tasks(DISPATCH_SEND_TASK) == [(DISPATCH_SEND_TASK, [dispatch.pk])]


@pytest.mark.parametrize("role", [roles.SUPPORT, roles.FINANCE, roles.PHARMACIST])
def test_other_roles_neither_see_the_dashboard_nor_replay(role, formulary):
    _, letter = dead_lettered_prescription()
    client = logged_in(StaffFactory(role=role))

    assert client.get("/admin/dashboard/").status_code == 403
    assert client.get("/admin/dashboard/tiles/").status_code == 403
    assert client.post(f"/admin/dashboard/dead-letters/{letter.pk}/replay/").status_code == 403
    assert DeadLetter.objects.get(pk=letter.pk).resolved_at is None


def test_the_dashboard_needs_a_signed_in_verified_session(formulary):
    from django.test import Client

    response = Client().get("/admin/dashboard/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_an_unreachable_broker_shows_unknown_depths_and_a_red_tile():
    depths = dashboard.broker_queue_depths(broker_url="redis://127.0.0.1:1/0")
    snapshot = dashboard.pipeline_snapshot(with_queue_depths=False)
    snapshot.queue_depths = depths

    (tile,) = [tile for tile in dashboard.tiles(snapshot) if tile.key == "queue_depth"]
    assert set(depths.values()) == {None}
    assert (tile.value, tile.detail, tile.is_red) == ("unknown", "broker unreachable", True)


def test_a_reachable_broker_reports_each_queues_depth():
    from config.celery import app

    app.send_task("tests.nothing", queue="checks")
    app.send_task("tests.nothing", queue="checks")
    try:
        depths = dashboard.broker_queue_depths()
    finally:
        from tests.processes import purge_queues

        purge_queues()

    assert depths["checks"] == 2
    assert set(depths) == {"default", "events", "checks", "payments", "dispatch", "webhooks", "notifications"}


def test_open_enquiries_count_toward_overdue_only_past_their_due_time():
    EnquiryFactory(due_at=timezone.now() - datetime.timedelta(minutes=1))
    EnquiryFactory(due_at=timezone.now() + datetime.timedelta(hours=1))
    EnquiryFactory(
        due_at=timezone.now() - datetime.timedelta(hours=1),
        status=Enquiry.Status.RESOLVED,
        resolved_at=timezone.now(),
    )

    snapshot = dashboard.pipeline_snapshot(with_queue_depths=False)

    assert (snapshot.enquiries_open, snapshot.enquiries_overdue) == (2, 1)


# --- Open order alerts ----------------------------------------------------------------------------


def order_alert(*, resolved: bool = False) -> OrderAlert:
    prescription = paid_prescription()
    dispatch = dispatch_create(prescription_id=prescription.pk)
    return OrderAlert.objects.create(
        dispatch=dispatch,
        reason="no progress from the gateway",
        resolved_at=timezone.now() if resolved else None,
    )


def test_an_operator_sees_the_open_order_alerts_red_with_a_link_to_them_listed(formulary):
    open_alerts = [order_alert(), order_alert()]
    resolved = order_alert(resolved=True)
    user = StaffFactory(role=roles.OPERATOR)
    for alert in [*open_alerts, resolved]:
        staff_assign_clinic(user=user, clinic=alert.dispatch.prescription.clinic)
    client = logged_in(user)

    body = client.get("/admin/dashboard/").content.decode()

    tile = re.search(
        r'<div class="tile( tile-red)?" data-tile="open_order_alerts">(.*?)</div>\s*</div>', body, re.S
    )
    assert tile, "no open order alerts tile"
    assert tile.group(1) == " tile-red"
    link = re.search(r'<div class="tile-value"><a href="([^"]+)">(\d+)</a></div>', tile.group(2))
    assert link, "the figure is not a link"
    assert link.group(2) == "2"
    assert link.group(1) == "/admin/pharmacy/orderalert/?resolved_at__isempty=1"
    listed = client.get(link.group(1)).content.decode()
    assert {int(pk) for pk in re.findall(r"/admin/pharmacy/orderalert/(\d+)/change/", listed)} == {
        alert.pk for alert in open_alerts
    }


def test_with_no_open_order_alert_the_tile_is_calm(formulary):
    order_alert(resolved=True)

    (tile,) = [
        tile for tile in dashboard.tiles(dashboard.pipeline_snapshot()) if tile.key == "open_order_alerts"
    ]

    assert (tile.value, tile.detail, tile.is_red) == ("0", "none open", False)


def test_the_admin_role_sees_the_dashboard_without_the_order_alerts_it_may_not_view(formulary):
    # The role matrix: order alerts are the operators' (pharmacy.orderalert, operator only)
    order_alert()
    assert roles.ADMIN_MODELS["pharmacy.orderalert"] == {roles.OPERATOR: "vc"}

    response = logged_in(StaffFactory(role=roles.ADMIN)).get("/admin/dashboard/tiles/")
    body = response.content.decode()

    assert response.status_code == 200
    assert 'data-tile="dead_letters"' in body
    assert 'data-tile="open_order_alerts"' not in body
    assert "orderalert" not in body
