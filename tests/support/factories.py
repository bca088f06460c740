from __future__ import annotations

import factory
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from prescriptions.models import PharmacistProfile
from support import roles

PASSWORD = "correct horse battery staple"


class StaffFactory(factory.django.DjangoModelFactory):
    """A staff user with a password and a TOTP device; `role=` puts them in that group."""

    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"staff{n}")
    is_staff = True
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def role(self, create: bool, role: str | None, **kwargs: object) -> None:
        if role:
            self.groups.add(role_group(role))
        self.save()

    @factory.post_generation
    def registration(self, create: bool, registration: str | None, **kwargs: object) -> None:
        if registration is not None:
            PharmacistProfile.objects.create(
                user=self, registration_body="GPhC", registration_number=registration
            )

    @factory.post_generation
    def totp(self, create: bool, extracted: object, **kwargs: object) -> None:
        TOTPDevice.objects.create(user=self, name="phone", confirmed=True)


def role_group(role: str) -> Group:
    """The role's group from the migration; rebuilt after a transactional test's flush emptied it."""
    group, created = Group.objects.get_or_create(name=role)
    if created:
        for dotted in roles.ROLE_PERMISSIONS[role]:
            app_label, codename = dotted.split(".", 1)
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
    return group


def pharmacist_create(**kwargs: object) -> User:
    return StaffFactory(role=roles.PHARMACIST, registration="2087654", **kwargs)


def otp_verify(client: Client, user: User) -> None:
    """Mark a logged-in session as having passed the second factor, as the login form would."""
    device = TOTPDevice.objects.filter(user=user).first() or TOTPDevice.objects.create(
        user=user, name="test", confirmed=True
    )
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()


class StaffClient(Client):
    """force_login skips the password and, likewise, the second factor (the 2FA flow itself is
    tested through the real login form in tests/security/test_staff_login.py)."""

    def force_login(self, user, backend=None):  # type: ignore[no-untyped-def]
        super().force_login(user, backend)
        if user.is_staff:
            otp_verify(self, user)
