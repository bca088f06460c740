"""What the role matrix means in practice: refused actions change nothing, nobody but a superuser
grants superuser or pharmacist rights, TOTP keys never show, reconciliation keeps to its clinics."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django_otp.plugins.otp_totp.models import TOTPDevice

from billing.adapters import stripe as stripe_api
from billing.models import Payment
from billing.services import payments
from events.models import Event
from prescriptions.models import PharmacistProfile, Prescription, Status
from support import roles
from support.services import staff_assign_clinic
from tests.billing.factories import approved_prescription
from tests.prescriptions.test_admin import awaiting
from tests.support.factories import PASSWORD, StaffClient, StaffFactory, pharmacist_create, role_group

pytestmark = pytest.mark.django_db

PRESCRIPTIONS = "/admin/prescriptions/prescription/"


def logged_in(user: User) -> StaffClient:
    client = StaffClient()
    client.force_login(user)
    return client


def cancel_action(client: StaffClient, prescription: Prescription):  # type: ignore[no-untyped-def]
    return client.post(
        PRESCRIPTIONS, {"action": "cancel_with_compensation", "_selected_action": [prescription.pk]}
    )


# --- cancel with compensation -----------------------------------------------------------------


@pytest.mark.parametrize("role", [roles.SUPPORT, roles.OPERATOR, roles.FINANCE, roles.ADMIN])
def test_no_role_but_the_pharmacist_cancels_with_compensation_from_the_admin(role, formulary):
    prescription = awaiting()
    user = StaffFactory(role=role)
    staff_assign_clinic(user=user, clinic=prescription.clinic)
    events_before = Event.objects.filter(aggregate_id=prescription.pk).count()

    cancel_action(logged_in(user), prescription)

    assert Prescription.objects.get(pk=prescription.pk).status == Status.AWAITING_PHARMACIST
    assert Event.objects.filter(aggregate_id=prescription.pk).count() == events_before


def test_a_pharmacist_cancels_with_compensation_from_the_admin(formulary):
    prescription = awaiting()

    response = cancel_action(logged_in(pharmacist_create()), prescription)

    assert response.status_code == 302
    assert Prescription.objects.get(pk=prescription.pk).status == Status.CANCELLED


# --- granting rights --------------------------------------------------------------------------


def user_form(user: User, **changes: object) -> dict[str, object]:
    return {
        "username": user.username,
        "first_name": "",
        "last_name": "",
        "email": "",
        "is_active": "on",
        "is_staff": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "09:00:00",
        "last_login_0": "",
        "last_login_1": "",
        **changes,
    }


def test_the_admin_role_cannot_make_anyone_superuser_or_grant_a_permission_of_its_own_choosing():
    admin = StaffFactory(role=roles.ADMIN)
    colleague = StaffFactory(role=roles.SUPPORT)
    decide = Permission.objects.get(codename="add_pharmacistreview")

    response = logged_in(admin).post(
        f"/admin/auth/user/{colleague.pk}/change/",
        user_form(
            colleague,
            is_superuser="on",
            user_permissions=[decide.pk],
            groups=[role_group(roles.FINANCE).pk],
        ),
    )

    colleague.refresh_from_db()
    assert response.status_code == 302  # saved: the role it may grant, nothing else
    assert colleague.is_superuser is False
    assert list(colleague.user_permissions.all()) == []
    assert list(colleague.groups.values_list("name", flat=True)) == [roles.FINANCE]


@pytest.mark.parametrize("role", [roles.PHARMACIST, roles.ADMIN])
def test_the_admin_role_cannot_grant_the_pharmacist_or_admin_role(role):
    admin = StaffFactory(role=roles.ADMIN)
    colleague = StaffFactory(role=roles.SUPPORT)

    response = logged_in(admin).post(
        f"/admin/auth/user/{colleague.pk}/change/", user_form(colleague, groups=[role_group(role).pk])
    )

    assert response.status_code == 200  # the form refused the choice
    assert "groups" in response.context["adminform"].form.errors
    assert list(colleague.groups.values_list("name", flat=True)) == [roles.SUPPORT]


def test_the_admin_role_cannot_give_itself_more_or_take_over_a_superuser_or_a_pharmacist():
    admin = StaffFactory(role=roles.ADMIN)
    superuser = StaffFactory(is_superuser=True)
    pharmacist = pharmacist_create()
    client = logged_in(admin)

    own = client.post(
        f"/admin/auth/user/{admin.pk}/change/",
        user_form(admin, is_superuser="on", groups=[role_group(roles.PHARMACIST).pk]),
    )
    passwords = [
        client.post(f"/admin/auth/user/{user.pk}/password/", {"password1": "x" * 20, "password2": "x" * 20})
        for user in (superuser, pharmacist)
    ]
    profile = client.post(
        "/admin/prescriptions/pharmacistprofile/add/",
        {"user": admin.pk, "registration_body": "GPhC", "registration_number": "2099999"},
    )

    admin.refresh_from_db()
    assert own.status_code == 403
    assert admin.is_superuser is False
    assert list(admin.groups.values_list("name", flat=True)) == [roles.ADMIN]
    assert [response.status_code for response in passwords] == [403, 403]
    assert all(User.objects.get(pk=user.pk).check_password(PASSWORD) for user in (superuser, pharmacist))
    assert profile.status_code == 403
    assert not PharmacistProfile.objects.filter(user=admin).exists()


def test_a_superuser_grants_the_pharmacist_role_and_superuser_status():
    superuser = StaffFactory(is_superuser=True)
    colleague = StaffFactory(role=roles.SUPPORT)

    response = logged_in(superuser).post(
        f"/admin/auth/user/{colleague.pk}/change/",
        user_form(colleague, is_superuser="on", groups=[role_group(roles.PHARMACIST).pk]),
    )

    colleague.refresh_from_db()
    assert response.status_code == 302
    assert colleague.is_superuser is True
    assert list(colleague.groups.values_list("name", flat=True)) == [roles.PHARMACIST]


# --- TOTP keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["admin role", "superuser"])
def test_no_one_reads_a_totp_key_in_the_back_office(who):
    viewer = StaffFactory(role=roles.ADMIN) if who == "admin role" else StaffFactory(is_superuser=True)
    device = TOTPDevice.objects.get(user=StaffFactory(username="casey"))
    client = logged_in(viewer)
    base = f"/admin/otp_totp/totpdevice/{device.pk}"

    pages = [client.get("/admin/otp_totp/totpdevice/"), client.get(f"{base}/change/")]
    config, qrcode = client.get(f"{base}/config/"), client.get(f"{base}/qrcode/")
    add = client.get("/admin/otp_totp/totpdevice/add/")

    assert [page.status_code for page in pages] == [200, 200]
    assert all(device.key not in page.content.decode() for page in pages)
    assert all("qrcode" not in page.content.decode() for page in pages)
    assert (config.status_code, qrcode.status_code, add.status_code) == (403, 403, 403)


# --- Stripe reconciliation ----------------------------------------------------------------------

RECONCILIATION = "/admin/billing/payment/reconciliation/"


def dropped_webhook_payment(clinic, medication) -> Payment:  # type: ignore[no-untyped-def]
    """A payment Stripe took whose webhook was lost: ours says requires_payment."""
    prescription = approved_prescription(clinic, medication)
    payments.payment_start(prescription_id=prescription.pk)
    payment = Payment.objects.get(prescription=prescription)
    stripe_api.payment_intent_confirm(
        intent_id=payment.stripe_payment_intent_id,
        payment_method="pm_card_visa",
        idempotency_key=f"pay-{payment.pk}",
    )
    return payment


def test_support_may_not_open_or_post_to_the_reconciliation_page(stripe_sim, clinic_a, paracetamol):
    stripe_sim.control(drop_next_webhooks=1)
    payment = dropped_webhook_payment(clinic_a, paracetamol)
    support = StaffFactory(role=roles.SUPPORT)
    staff_assign_clinic(user=support, clinic=clinic_a.clinic)
    client = logged_in(support)

    page, post = client.get(RECONCILIATION), client.post(RECONCILIATION, {"payment_id": payment.pk})

    assert (page.status_code, post.status_code) == (403, 403)
    assert Payment.objects.get(pk=payment.pk).status == Payment.Status.REQUIRES_PAYMENT


def test_reconciliation_lists_and_syncs_only_the_users_clinics(stripe_sim, clinic_a, clinic_b, paracetamol):
    stripe_sim.control(drop_next_webhooks=2)
    mine = dropped_webhook_payment(clinic_a, paracetamol)
    theirs = dropped_webhook_payment(clinic_b, paracetamol)
    clerk = StaffFactory()
    clerk.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="billing", codename__in=["view_payment", "change_payment"]
        )
    )
    staff_assign_clinic(user=clerk, clinic=clinic_a.clinic)
    client = logged_in(clerk)

    page = client.get(RECONCILIATION)
    foreign = client.post(RECONCILIATION, {"payment_id": theirs.pk})
    own = client.post(RECONCILIATION, {"payment_id": mine.pk})

    assert [mismatch.payment_id for mismatch in page.context["mismatches"]] == [mine.pk]
    assert foreign.status_code == 302
    assert Payment.objects.get(pk=theirs.pk).status == Payment.Status.REQUIRES_PAYMENT
    assert own.status_code == 302
    assert Payment.objects.get(pk=mine.pk).status == Payment.Status.SUCCEEDED
