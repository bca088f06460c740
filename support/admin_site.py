"""The back office admits only sessions verified by a TOTP device (django-otp)."""

from __future__ import annotations

from typing import Any

from django_otp import devices_for_user
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite


class StaffAuthenticationForm(OTPAdminAuthenticationForm):
    """Username, password and code on one form: with a single device, no need to pick it first."""

    def _chosen_device(self, user: Any) -> Any:
        device = super()._chosen_device(user)
        if device is None:
            devices = list(devices_for_user(user, for_verify=True))
            if len(devices) == 1:
                return devices[0]
        return device


class StaffAdminSite(OTPAdminSite):
    login_form = StaffAuthenticationForm
