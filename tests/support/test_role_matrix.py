"""The back office's role × action matrix (support/roles.py, rendered in the README) is what the
admin does: every registered admin's list, add, change and delete views, every admin action and
every custom admin page, tried as each role, are allowed or refused exactly as the table says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from support import roles
from support.services import staff_assign_clinic
from tests.patients.factories import PatientFactory
from tests.support.factories import StaffClient, StaffFactory, role_group

pytestmark = pytest.mark.django_db

README = Path(__file__).resolve().parents[2] / "README.md"
MISSING = 0  # no row has this primary key: the admin checks permission before the lookup
VIEWS = {"v": "view", "a": "add", "c": "change", "d": "delete"}
STOCK_URL_SUFFIXES = ("_changelist", "_add", "_history", "_delete", "_change", "_autocomplete")


def model_key(model: Any) -> str:
    return model._meta.label_lower


def admin_entries() -> list[str]:
    """Every entry the matrix must cover, read from the live admin site."""
    entries = []
    for model, model_admin in admin.site._registry.items():
        entries += [f"{model_key(model)}: {view}" for view in VIEWS.values()]
        entries += [f"{model_key(model)}: action {name}" for name in admin_action_names(model_admin)]
    entries += [f"page {name}" for name in custom_page_names()]
    return sorted(entries)


def admin_action_names(model_admin: Any) -> list[str]:
    # delete_selected follows the delete permission, already a column of its own.
    return [name if isinstance(name, str) else name.__name__ for name in model_admin.actions or []]


def custom_pages() -> dict[str, list[str]]:
    """The admin site's URL names beyond each model's stock list/add/change/delete/history, each
    with the names of its arguments."""
    pages: dict[str, list[str]] = {}
    site_patterns = next(
        pattern
        for pattern in get_resolver().url_patterns
        if isinstance(pattern, URLResolver) and pattern.app_name == "admin"
    )

    def walk(patterns: list[Any]) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns)
            elif isinstance(pattern, URLPattern) and pattern.name:
                pages[pattern.name] = list(pattern.pattern.regex.groupindex)

    walk(site_patterns.url_patterns)
    models = {f"{model._meta.app_label}_{model._meta.model_name}" for model in admin.site._registry}
    stock_site = {"index", "login", "logout", "password_change", "password_change_done", "jsi18n"}
    stock_site |= {"view_on_site", "app_list", "autocomplete", "auth_user_password_change"}
    return {
        name: arguments
        for name, arguments in pages.items()
        if name not in stock_site
        and not (name.endswith(STOCK_URL_SUFFIXES) and name.rsplit("_", 1)[0] in models)
    }


def custom_page_names() -> list[str]:
    return sorted(custom_pages())


def expected_entries(role: str) -> set[str]:
    allowed = set()
    for model, by_role in roles.ADMIN_MODELS.items():
        allowed |= {f"{model}: {VIEWS[letter]}" for letter in by_role.get(role, "")}
    for action, holders in roles.ADMIN_ACTIONS.items():
        model, name = action.rsplit(".", 1)
        if role in holders:
            allowed.add(f"{model}: action {name}")
    allowed |= {f"page {name}" for name, holders in roles.ADMIN_PAGES.items() if role in holders}
    return allowed


def table_entries() -> list[str]:
    entries = [f"{model}: {view}" for model in roles.ADMIN_MODELS for view in VIEWS.values()]
    for action in roles.ADMIN_ACTIONS:
        model, name = action.rsplit(".", 1)
        entries.append(f"{model}: action {name}")
    entries += [f"page {name}" for name in roles.ADMIN_PAGES]
    return sorted(entries)


# --- probing the admin as one user -------------------------------------------------------------


def page_arguments(arguments: list[str], fixtures: dict[str, Any]) -> dict[str, Any]:
    """Real objects for the custom pages that take one (a patient of the support user's clinic)."""
    return {argument: fixtures.get(argument, MISSING) for argument in arguments}


def refused(response: Any, entry: str) -> bool:
    assert response.status_code < 500, f"{entry}: HTTP {response.status_code}"
    return response.status_code == 403


def allowed_entries(user: User, fixtures: dict[str, Any]) -> set[str]:
    client = StaffClient()
    client.force_login(user)
    request = RequestFactory().get("/admin/")
    request.user = user
    allowed = set()
    for model, model_admin in admin.site._registry.items():
        key = model_key(model)
        base = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        views = {
            "view": client.get(reverse(f"{base}_changelist")),
            "add": client.get(reverse(f"{base}_add")),
            # A change is refused on POST without the change permission (a GET may only view).
            "change": client.post(reverse(f"{base}_change", args=[MISSING]), {}),
            "delete": client.get(reverse(f"{base}_delete", args=[MISSING])),
        }
        allowed |= {
            f"{key}: {view}" for view, response in views.items() if not refused(response, f"{key} {view}")
        }
        if f"{key}: view" in allowed:
            offered = model_admin.get_actions(request)
            allowed |= {
                f"{key}: action {name}" for name in admin_action_names(model_admin) if name in offered
            }
    for name, arguments in custom_pages().items():
        url = reverse(f"admin:{name}", kwargs=page_arguments(arguments, fixtures))
        response = client.get(url)
        if response.status_code == 405:
            response = client.post(url, {})
        if not refused(response, name):
            allowed.add(f"page {name}")
    return allowed


@pytest.fixture
def fixtures() -> dict[str, Any]:
    patient = PatientFactory()
    someone = StaffFactory(role=roles.SUPPORT)
    return {
        "patient_id": patient.pk,
        "object_pk": patient.clinic_id,
        "user_id": someone.pk,
        "group_id": role_group(roles.SUPPORT).pk,
        "pk": someone.totpdevice_set.get().pk,
    }


# --- the tests ---------------------------------------------------------------------------------


def test_the_table_covers_every_admin_view_action_and_page_and_nothing_else():
    assert table_entries() == admin_entries()


@pytest.mark.parametrize("role", list(roles.ROLE_PERMISSIONS))
def test_each_role_is_allowed_exactly_what_the_table_says_and_refused_the_rest(role, fixtures):
    # A pharmacist with a recorded registration: without one, the review page is refused too.
    user = StaffFactory(role=role, registration="2087654" if role == roles.PHARMACIST else None)
    if role == roles.SUPPORT:
        staff_assign_clinic(user=user, clinic=PatientFactory().clinic)

    observed = allowed_entries(user, fixtures)

    assert sorted(observed - expected_entries(role)) == [], "allowed, but the table says refused"
    assert sorted(expected_entries(role) - observed) == [], "refused, but the table says allowed"


def test_the_readme_shows_the_table():
    text = README.read_text()
    start, end = "<!-- role-matrix:start -->\n", "<!-- role-matrix:end -->"
    shown = text[text.index(start) + len(start) : text.index(end)]

    assert shown == roles.matrix_markdown(), (
        "README.md's role matrix is stale: replace it with support.roles.matrix_markdown()"
    )
