"""Staff accounts: who may decide on prescriptions, which clinics a staff member serves, 2FA."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django_otp.plugins.otp_totp.models import TOTPDevice
from guardian.shortcuts import assign_perm, get_objects_for_user

from patients.models import Clinic
from prescriptions.models import PharmacistProfile
from support import roles

CLINIC_PERMISSION = "patients.view_clinic"


def staff_can_decide(user: User) -> bool:
    """Only an active pharmacist with a recorded professional registration may approve or reject.

    A superuser is no exception: the law asks for a registered pharmacist, not an administrator.
    """
    if not (user.is_active and user.is_staff):
        return False
    if not user.groups.filter(name=roles.PHARMACIST).exists():
        return False
    return PharmacistProfile.objects.filter(user=user).exclude(registration_number="").exists()


def staff_roles_grantable(*, editor: User) -> list[str]:
    """The roles this staff member may hand out: every role for a superuser; to anyone else
    (the admin role) only those that cannot approve medicines or manage accounts."""
    return list(roles.ROLE_PERMISSIONS) if editor.is_superuser else list(roles.GRANTABLE_BY_ADMIN)


def staff_may_change_account(*, editor: User, account: User) -> bool:
    """A superuser's account, or one holding a role the editor could not grant, changes only at
    a superuser's hand (its password included): nobody raises themselves through another."""
    if editor.is_superuser:
        return True
    if account.is_superuser:
        return False
    grantable = staff_roles_grantable(editor=editor)
    return not account.groups.exclude(name__in=grantable).exists() and not account.user_permissions.exists()


def staff_clinics(*, user: User) -> QuerySet[Clinic]:
    """The clinics a staff member works for: all of them with the role-wide permission,
    otherwise only those assigned one by one (django-guardian object permissions)."""
    return get_objects_for_user(user, CLINIC_PERMISSION, klass=Clinic, accept_global_perms=True)


def staff_assign_clinic(*, user: User, clinic: Clinic) -> None:
    assign_perm(CLINIC_PERMISSION, user, clinic)


@transaction.atomic
def staff_totp_enrol(*, user: User, name: str = "authenticator") -> TOTPDevice:
    """Give a staff member a new TOTP device, replacing any they had (a lost phone)."""
    TOTPDevice.objects.filter(user=user).delete()
    return TOTPDevice.objects.create(user=user, name=name, confirmed=True)
