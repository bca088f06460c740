"""The back office: the Django admin, branded, behind a TOTP second factor (django-otp), with
the index arranged around each role's work and the back office's own pages (support/views.py)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django_otp import devices_for_user
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite

from support import roles

SIGN_IN_FAILED = "Sign-in failed. Check your username, password and the current code from your authenticator."


class StaffAuthenticationForm(OTPAdminAuthenticationForm):
    """Username, password and code on one form: with a single device, no need to pick it first.

    Every failure reads the same and counts the same (a django-axes failure), whichever factor
    was wrong: a right password with a wrong or missing code must not tell a guesser the
    password was right.
    """

    user_cache: Any

    def clean(self) -> dict[str, Any]:
        try:
            return super().clean()
        except ValidationError:
            if self.user_cache is not None:
                # The password passed, so django-auth sent no failure: send it for the code.
                user_login_failed.send(
                    sender=type(self),
                    credentials={"username": self.cleaned_data.get("username", "")},
                    request=self.request,
                )
                self.user_cache = None
            raise ValidationError(SIGN_IN_FAILED, code="invalid_login") from None

    def _update_form(self, user: Any) -> None:
        # django-otp would now list the user's devices and keep the typed password in the page,
        # telling a guesser the password was right. The single device is chosen by itself.
        return

    def _chosen_device(self, user: Any) -> Any:
        device = super()._chosen_device(user)
        if device is None:
            devices = list(devices_for_user(user, for_verify=True))
            if len(devices) == 1:
                return devices[0]
        return device


# Each role's work on the index, in the order they reach for it ("app_label.model").
ROLE_WORK: dict[str, tuple[str, list[str]]] = {
    roles.PHARMACIST: (
        "Pharmacist",
        [
            "prescriptions.pharmacistqueue",
            "support.enquiry",
            "prescriptions.prescription",
            "prescriptions.repeatseries",
            "patients.patient",
        ],
    ),
    roles.SUPPORT: (
        "Support",
        [
            "support.enquiry",
            "patients.patient",
            "prescriptions.prescription",
            "notifications.notification",
            "events.webhookdelivery",
            "pharmacy.dispatch",
        ],
    ),
    roles.OPERATOR: (
        "Operations",
        [
            "pharmacy.deadletter",
            "pharmacy.dispatch",
            "events.webhookdelivery",
            "events.clinicwebhookendpoint",
            "pharmacy.gatewaycancellation",
            "events.outboxmessage",
            "events.event",
            "notifications.notification",
        ],
    ),
    roles.FINANCE: (
        "Finance",
        [
            "billing.claimbatch",
            "billing.payment",
            "billing.refund",
            "billing.cancellationrequest",
            "billing.nhscharge",
            "billing.nhschargerate",
            "billing.stripeevent",
        ],
    ),
    roles.ADMIN: (
        "Administration",
        [
            "auth.user",
            "auth.group",
            "prescriptions.pharmacistprofile",
            "patients.clinic",
            "patients.clinicclient",
            "otp_totp.totpdevice",
            "axes.accessattempt",
            "audit.patientaccess",
            "auditlog.logentry",
            "support.supportaction",
        ],
    ),
}


def role_sections(request: HttpRequest, app_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The signed-in user's roles as index sections, each listing the models of its work that
    the user may see (app_list is already filtered by permission)."""
    models = {
        f"{app['app_label']}.{model['object_name'].lower()}": model
        for app in app_list
        for model in app["models"]
    }
    held = set(request.user.groups.values_list("name", flat=True))
    sections = []
    for role, (title, wanted) in ROLE_WORK.items():
        if role not in held and not request.user.is_superuser:
            continue
        shown = [models[key] for key in wanted if key in models]
        if shown:
            sections.append({"role": role, "title": title, "models": shown})
    return sections


class StaffAdminSite(OTPAdminSite):
    login_form = StaffAuthenticationForm
    site_header = "Scriptline back office"
    site_title = "Scriptline back office"
    index_title = "Your work"
    index_template = "admin/scriptline_index.html"

    def get_urls(self) -> list[URLPattern]:
        from support import views

        view = self.admin_view
        return [
            path("dashboard/", view(views.dashboard_view), name="dashboard"),
            path("dashboard/tiles/", view(views.dashboard_tiles_view), name="dashboard_tiles"),
            path(
                "dashboard/dead-letters/<int:dead_letter_id>/replay/",
                view(views.dead_letter_replay_view),
                name="dashboard_dead_letter_replay",
            ),
            path("support/find/", view(views.patient_find_view), name="support_patient_find"),
            path("support/patient/<int:patient_id>/", view(views.patient_page_view), name="support_patient"),
            path(
                "support/patient/<int:patient_id>/act/",
                view(views.patient_action_view),
                name="support_patient_action",
            ),
            *super().get_urls(),
        ]

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        from support.views import my_work

        app_list = self.get_app_list(request)
        sections = role_sections(request, app_list)
        in_sections = {id(model) for section in sections for model in section["models"]}
        rest = [
            {**app, "models": [model for model in app["models"] if id(model) not in in_sections]}
            for app in app_list
        ]
        context = {
            **(extra_context or {}),
            "my_work": my_work(request),
            "role_sections": sections,
            "other_apps": [app for app in rest if app["models"]],
        }
        return super().index(request, context)
