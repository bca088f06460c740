"""The support console's queue (enquiries, soonest due first, overdue in red) and the read-only
log of support actions. The patient page and its actions are support/views.py."""

from __future__ import annotations

from typing import Any, cast

from auditlog.models import LogEntry
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin
from django_otp.plugins.otp_totp.models import TOTPDevice
from oauth2_provider.models import AccessToken, Grant, IDToken, RefreshToken

from common.auth import staff_user_of
from patients import phi
from support import enquiries
from support.large_tables import LargeTableAdminMixin
from support.models import Enquiry, EnquiryNote, SupportAction
from support.scoping import ClinicScopedAdminMixin
from support.services import staff_clinics, staff_may_change_account, staff_roles_grantable

HIDDEN_TOTP_FIELDS = {"key", "qrcode_link"}


class QueueFilter(admin.SimpleListFilter):
    """The queue shows what is still to do unless asked otherwise."""

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("unresolved", "To do (open or with a pharmacist)"),
            ("mine", "Assigned to me"),
            ("overdue", "Overdue"),
            ("escalated", "With a pharmacist"),
            ("resolved", "Resolved"),
            ("all", "All"),
        ]

    def choices(self, changelist: Any) -> Any:
        # No stock "All" (no parameter): no parameter means "to do" here; "All" is a lookup.
        for lookup, title in self.lookup_choices:
            yield {
                "selected": (self.value() or "unresolved") == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Enquiry]) -> QuerySet[Enquiry]:
        unresolved = queryset.exclude(status=Enquiry.Status.RESOLVED)
        return {
            None: unresolved,
            "unresolved": unresolved,
            "mine": unresolved.filter(assignee=staff_user_of(request)),
            "overdue": unresolved.filter(due_at__lt=timezone.now()),
            "escalated": queryset.filter(status=Enquiry.Status.ESCALATED),
            "resolved": queryset.filter(status=Enquiry.Status.RESOLVED),
            "all": queryset,
        }.get(self.value(), unresolved)


class EnquiryAddForm(forms.ModelForm):
    note = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What the patient asked (encrypted).",
    )
    staff_user: Any = None

    class Meta:
        model = Enquiry
        fields = ["patient", "prescription", "channel", "category", "assignee"]

    def clean(self) -> dict[str, Any]:
        data = cast(dict[str, Any], super().clean())  # a ModelForm's clean returns cleaned_data
        patient, prescription = data.get("patient"), data.get("prescription")
        user = self.staff_user
        if (
            patient is not None
            and not user.is_superuser
            and not staff_clinics(user=user).filter(pk=patient.clinic_id).exists()
        ):
            self.add_error("patient", "That patient belongs to a clinic you do not work for.")
        if patient is not None and prescription is not None and prescription.patient_id != patient.pk:
            self.add_error("prescription", "That prescription is not this patient's.")
        return data


class NoteInline(admin.TabularInline):
    model = EnquiryNote
    extra = 0
    can_delete = False
    fields = ["created_at", "author", "body"]
    readonly_fields = ["created_at", "author", "body"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # notes are added on the patient page, with the action log


@admin.register(Enquiry)
class EnquiryAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, admin.ModelAdmin):
    list_display = [
        "enquiry",
        "due",
        "category",
        "channel",
        "status",
        "patient_page",
        "prescription",
        "assignee",
    ]
    list_display_links = None
    list_filter = [QueueFilter, "category", "channel", "status"]
    list_select_related = ["patient", "prescription", "assignee"]
    list_defer = phi.phi_not_shown("patient")
    raw_id_fields = ["patient", "prescription"]
    search_fields = ["=id", "=patient__id", "=prescription__id"]
    search_help_text = "Exact: enquiry, patient or prescription number."
    ordering = ["due_at", "id"]
    inlines = [NoteInline]
    actions = ["assign_to_me"]

    def get_inlines(self, request: HttpRequest, obj: Enquiry | None = None) -> list[Any]:
        return self.inlines if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: Enquiry | None = None) -> list[Any]:
        if obj is None:
            return ["patient", "prescription", "channel", "category", "assignee", "note"]
        return [
            "patient_page",
            "prescription",
            "channel",
            "category",
            "status",
            "due_at",
            "assignee",
            "created_by",
            "created_at",
            "escalated_at",
            "resolved_at",
            "resolution",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Enquiry | None = None) -> list[str]:
        if obj is None:
            return []
        editable = {"assignee"}
        return [name for name in self.get_fields(request, obj) if name not in editable]

    def get_form(
        self, request: HttpRequest, obj: Enquiry | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = EnquiryAddForm
        form: Any = super().get_form(request, obj, change=change, **kwargs)
        form.staff_user = staff_user_of(request)
        return form

    def save_model(self, request: HttpRequest, obj: Enquiry, form: Any, change: bool) -> None:
        if change:
            enquiries.enquiry_assign(
                enquiry_id=obj.pk, staff_user=staff_user_of(request), assignee_id=obj.assignee_id
            )
            return
        opened = enquiries.enquiry_open(
            patient_id=obj.patient_id,
            prescription_id=obj.prescription_id,
            channel=obj.channel,
            category=obj.category,
            assignee_id=obj.assignee_id,
            note=form.cleaned_data.get("note", ""),
            staff_user=staff_user_of(request),
        )
        obj.pk = opened.pk
        obj.due_at = opened.due_at

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # Notes are written by the services, never through the inline.
        return

    def has_delete_permission(self, request: HttpRequest, obj: Enquiry | None = None) -> bool:
        return False

    @admin.display(description="Enquiry", ordering="id")
    def enquiry(self, obj: Enquiry) -> str:
        return format_html(
            '<a href="{}">#{}</a>', reverse("admin:support_enquiry_change", args=[obj.pk]), obj.pk
        )

    @admin.display(description="Due", ordering="due_at")
    def due(self, obj: Enquiry) -> str:
        due = f"{timezone.localtime(obj.due_at):%d %b %H:%M}"
        if obj.status == Enquiry.Status.RESOLVED:
            return format_html('<span class="due-resolved">{}</span>', due)
        if obj.is_overdue:
            late = timezone.now() - obj.due_at
            hours, minutes = divmod(int(late.total_seconds() // 60), 60)
            return format_html(
                '<span class="due-overdue" title="Overdue">{} · overdue {} h {} min</span>',
                due,
                hours,
                f"{minutes:02d}",
            )
        return format_html('<span class="due-ok">{}</span>', due)

    @admin.display(description="Patient")
    def patient_page(self, obj: Enquiry) -> str:
        url = reverse("admin:support_patient", args=[obj.patient_id])
        return format_html('<a href="{}">Patient #{} · open the patient page</a>', url, obj.patient_id)

    @admin.action(description="Assign to me", permissions=["change"])
    def assign_to_me(self, request: HttpRequest, queryset: QuerySet[Enquiry]) -> None:
        for enquiry in queryset:
            enquiries.enquiry_assign(
                enquiry_id=enquiry.pk, staff_user=staff_user_of(request), assignee_id=request.user.pk
            )
        self.message_user(request, f"Assigned {queryset.count()} enquiry(ies) to you.", messages.SUCCESS)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        extra_context = {**(extra_context or {}), "find_url": reverse("admin:support_patient_find")}
        return super().changelist_view(request, extra_context)


@admin.register(SupportAction)
class SupportActionAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, admin.ModelAdmin):
    """Append-only: what support did, for whom, why (the reason is encrypted at rest)."""

    list_display = ["created_at", "kind", "staff_user", "patient", "prescription", "enquiry", "outcome"]
    list_filter = ["kind"]
    list_select_related = ["staff_user", "patient", "prescription", "enquiry"]
    list_defer = phi.phi_not_shown("patient")
    raw_id_fields = ["patient", "prescription", "enquiry", "staff_user", "clinic"]
    search_fields = ["=patient__id", "=prescription__id", "=enquiry__id", "=staff_user__username"]
    readonly_fields = [field.name for field in SupportAction._meta.fields]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Staff accounts and second factors ------------------------------------------------------------


admin.site.unregister(User)
admin.site.unregister(TOTPDevice)


@admin.register(User)
class StaffUserAdmin(UserAdmin):
    """Only a superuser makes a superuser, grants a permission one by one, or hands out the
    pharmacist or admin role; accounts holding any of those are read-only to everyone else."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            readonly += ["is_superuser", "user_permissions"]
        return readonly

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "groups" and not request.user.is_superuser:
            kwargs["queryset"] = Group.objects.filter(
                name__in=staff_roles_grantable(editor=staff_user_of(request))
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if not super().has_change_permission(request, obj):
            return False
        return obj is None or staff_may_change_account(editor=staff_user_of(request), account=obj)


@admin.register(TOTPDevice)
class StaffTOTPDeviceAdmin(TOTPDeviceAdmin):
    """A device's key is shown once, to whoever enrols it (manage.py staff_totp_enrol), and never
    in the back office: no key field, no QR code, no adding a device here."""

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return [
            (name, {**options, "fields": [f for f in options["fields"] if f not in HIDDEN_TOTP_FIELDS]})
            for name, options in super().get_fieldsets(request, obj)
        ]

    def get_list_display(self, request: HttpRequest) -> Any:
        return [name for name in super().get_list_display(request) if name not in HIDDEN_TOTP_FIELDS]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def config_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        raise PermissionDenied

    def qrcode_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        raise PermissionDenied


# --- Other packages' logs, which grow with traffic ------------------------------------------------
def _without_full_counts(model: type[Any]) -> None:
    """Re-register `model` with its package's admin plus LargeTableAdminMixin."""
    registered = type(admin.site.get_model_admin(model))
    admin.site.unregister(model)
    admin.site.register(model, type(registered.__name__, (LargeTableAdminMixin, registered), {}))


for _model in (
    LogEntry,
    AccessAttempt,
    AccessFailureLog,
    AccessLog,
    AccessToken,
    RefreshToken,
    Grant,
    IDToken,
):
    _without_full_counts(_model)
