"""Staff sign-in: password plus a TOTP code for every account, lockout after repeated failures.

These go through the real admin login form (no force_login), as a browser would.
"""

from __future__ import annotations

import re

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.support.factories import PASSWORD, StaffFactory

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
FAILED = "Sign-in failed. Check your username, password and the current code from your authenticator."


def current_code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"


def sign_in(client: Client, username: str, password: str, otp_token: str = "", address: str = "192.0.2.1"):  # type: ignore[no-untyped-def]
    return client.post(
        LOGIN, {"username": username, "password": password, "otp_token": otp_token}, REMOTE_ADDR=address
    )


def wrong_code(user) -> str:  # type: ignore[no-untyped-def]
    return f"{(int(current_code(user.totpdevice_set.get())) + 500_000) % 1_000_000:06d}"


def page_without_tokens(response) -> str:  # type: ignore[no-untyped-def]
    """The page as a guesser compares it: the per-render CSRF token aside."""
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.content.decode())


def test_a_staff_member_signs_in_with_password_and_a_current_totp_code():
    user = StaffFactory()
    client = Client()

    response = sign_in(client, user.username, PASSWORD, current_code(user.totpdevice_set.get()))

    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_a_password_without_a_code_does_not_open_the_admin():
    user = StaffFactory()
    client = Client()

    response = sign_in(client, user.username, PASSWORD)

    assert response.status_code == 200
    assert FAILED in response.content.decode()
    assert client.get("/admin/").status_code == 302


def test_a_wrong_code_does_not_open_the_admin():
    user = StaffFactory()
    device = user.totpdevice_set.get()
    wrong = f"{(int(current_code(device)) + 500_000) % 1_000_000:06d}"
    client = Client()

    response = sign_in(client, user.username, PASSWORD, wrong)

    assert response.status_code == 200
    assert FAILED in response.content.decode()
    assert client.get("/admin/").status_code == 302


@pytest.mark.parametrize("code", ["wrong", "missing"])
def test_a_right_password_with_a_bad_code_reads_exactly_like_a_wrong_password(code):
    user = StaffFactory()
    otp_token = wrong_code(user) if code == "wrong" else ""

    wrong_password = sign_in(Client(), user.username, "wrong password", otp_token)
    right_password = sign_in(Client(), user.username, PASSWORD, otp_token)

    assert right_password.status_code == wrong_password.status_code == 200
    assert page_without_tokens(right_password) == page_without_tokens(wrong_password)
    assert [str(error) for error in right_password.context["form"].non_field_errors()] == [FAILED]
    assert PASSWORD not in right_password.content.decode()


def test_wrong_codes_after_the_right_password_count_towards_the_lockout_like_wrong_passwords():
    user = StaffFactory()
    client = Client()

    failures = [sign_in(client, user.username, PASSWORD, wrong_code(user)).status_code for _ in range(5)]
    locked = sign_in(client, user.username, PASSWORD, current_code(user.totpdevice_set.get()))

    assert failures == [200, 200, 200, 200, 429]
    assert locked.status_code == 429
    assert client.get("/admin/").status_code == 302


def test_a_staff_member_without_an_enrolled_device_cannot_use_the_admin():
    user = StaffFactory()
    TOTPDevice.objects.filter(user=user).delete()
    client = Client()

    sign_in(client, user.username, PASSWORD, "123456")
    client.force_login(user)  # even a session with the password passed is not enough

    assert client.get("/admin/").status_code == 302
    assert client.get("/admin/").headers["Location"] == "/admin/login/?next=/admin/"


def test_a_session_with_the_password_alone_is_sent_back_to_the_login_page():
    user = StaffFactory(is_superuser=True)
    client = Client()
    client.force_login(user)

    response = client.get("/admin/patients/patient/")

    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/admin/patients/patient/"


def test_five_wrong_passwords_lock_the_account_even_with_the_right_password_after():
    user = StaffFactory()
    client = Client()

    failures = [sign_in(client, user.username, "wrong password").status_code for _ in range(5)]
    locked = sign_in(client, user.username, PASSWORD, current_code(user.totpdevice_set.get()))

    assert failures == [200, 200, 200, 200, 429]
    assert locked.status_code == 429
    assert "Account locked" in locked.content.decode()
    assert "Too many failed sign-in attempts (5)" in locked.content.decode()
    assert client.get("/admin/").status_code == 302
    # The refused attempt made while locked counts as one more failure.
    assert AccessAttempt.objects.get(username=user.username).failures_since_start == 6


def test_a_successful_sign_in_resets_the_failure_count():
    user = StaffFactory()
    client = Client()
    for _ in range(3):
        sign_in(client, user.username, "wrong password")

    response = sign_in(client, user.username, PASSWORD, current_code(user.totpdevice_set.get()))

    assert response.status_code == 302
    assert AccessAttempt.objects.filter(username=user.username).count() == 0


def test_a_colleagues_success_from_the_same_address_leaves_ones_failure_count_alone():
    guessed, colleague = StaffFactory(), StaffFactory()
    for _ in range(3):
        sign_in(Client(), guessed.username, "wrong password")

    response = sign_in(Client(), colleague.username, PASSWORD, current_code(colleague.totpdevice_set.get()))

    assert response.status_code == 302
    assert AccessAttempt.objects.get(username=guessed.username).failures_since_start == 3


def test_a_locked_username_does_not_lock_out_colleagues_at_the_same_address():
    guessed, colleague = StaffFactory(), StaffFactory()
    for _ in range(5):
        sign_in(Client(), guessed.username, "wrong password")
    client = Client()

    response = sign_in(client, colleague.username, PASSWORD, current_code(colleague.totpdevice_set.get()))

    assert sign_in(Client(), guessed.username, "wrong password").status_code == 429
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_a_username_locked_at_one_address_still_signs_in_from_another():
    user = StaffFactory()
    for _ in range(5):
        sign_in(Client(), user.username, "wrong password", address="192.0.2.66")

    response = sign_in(Client(), user.username, PASSWORD, current_code(user.totpdevice_set.get()))

    assert response.status_code == 302


def test_staff_sessions_expire_after_eight_hours_and_with_the_browser(settings):
    assert settings.SESSION_COOKIE_AGE == 8 * 3600
    assert settings.SESSION_EXPIRE_AT_BROWSER_CLOSE is True
