"""The signed-in staff member behind an admin or back-office request."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest


def staff_user_of(request: HttpRequest) -> User:
    """`request.user`, typed: the admin and the back office sit behind a staff login, so it is
    never anonymous there; if it ever were, the request is refused rather than served."""
    user = request.user
    if not isinstance(user, User):
        raise PermissionDenied
    return user
