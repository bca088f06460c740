"""staff_user_of: the admin's and the back office's signed-in user, or a refusal."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory

from common.auth import staff_user_of
from tests.support.factories import StaffFactory


@pytest.mark.django_db
def test_it_returns_the_signed_in_staff_member() -> None:
    staff = StaffFactory()
    request = RequestFactory().get("/admin/")
    request.user = staff

    assert staff_user_of(request) == staff


def test_an_anonymous_request_is_refused() -> None:
    request = RequestFactory().get("/admin/")
    request.user = AnonymousUser()

    with pytest.raises(PermissionDenied):
        staff_user_of(request)
