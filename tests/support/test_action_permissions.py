"""The back office's own actions and the one permission each checks (support/roles.py
ACTION_PERMISSIONS): every permission exists, and the roles get exactly the actions meant for them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from support import roles

pytestmark = pytest.mark.django_db


def test_every_action_names_a_permission_that_exists():
    named = {permission for permission in roles.ACTION_PERMISSIONS.values() if permission}
    existing = {
        f"{app_label}.{codename}"
        for app_label, codename in Permission.objects.values_list("content_type__app_label", "codename")
    }

    assert named - existing == set()


def test_each_role_may_take_exactly_its_actions():
    allowed = {
        role: sorted(
            action
            for action, permission in roles.ACTION_PERMISSIONS.items()
            if permission and permission in roles.ROLE_PERMISSIONS[role]
        )
        for role in roles.ROLE_PERMISSIONS
    }

    assert allowed == {
        roles.PHARMACIST: [
            "enquiry.add_note",
            "enquiry.assign",
            "enquiry.list",
            "enquiry.resolve",
            "patient_page.find",
            "patient_page.identity_check",
            "patient_page.view",
            "pharmacist.queue",
            "pharmacist.review",
        ],
        roles.SUPPORT: [
            "enquiry.add_note",
            "enquiry.assign",
            "enquiry.escalate",
            "enquiry.list",
            "enquiry.open",
            "enquiry.resolve",
            "patient_page.find",
            "patient_page.identity_check",
            "patient_page.request_cancellation",
            "patient_page.resend_notification",
            "patient_page.resend_webhook",
            "patient_page.view",
        ],
        roles.OPERATOR: ["dashboard.replay_dead_letter", "dashboard.view"],
        roles.FINANCE: [],
        roles.ADMIN: ["dashboard.view"],
    }
