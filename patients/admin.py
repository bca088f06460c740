from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from guardian.admin import GuardedModelAdmin

from audit.models import PatientAccess
from audit.services import patient_access_record
from common.auth import staff_user_of
from common.errors import DomainError
from patients import phi, services
from patients.models import (
    Allergy,
    Clinic,
    ClinicClient,
    CurrentMedication,
    Diagnosis,
    IdempotencyKey,
    Observation,
    Patient,
)
from support.large_tables import LargeTableAdminMixin
from support.scoping import ClinicScopedAdminMixin

ACCESS_HISTORY_SHOWN = 200


@admin.register(Clinic)
class ClinicAdmin(ClinicScopedAdminMixin, GuardedModelAdmin):  # type: ignore[misc]  # guardian's template attribute is untyped
    """ "Object permissions" on a clinic assigns staff to it (patients.view_clinic)."""

    clinic_path = "pk"
    list_display = ["name", "jurisdiction", "currency", "ods_code", "created_at"]
    list_filter = ["jurisdiction"]
    search_fields = ["name", "ods_code"]

    # django-guardian sends a refused user back to the index; refuse plainly, as every page does.
    def _require_change(self, request: HttpRequest) -> None:
        if not self.has_change_permission(request, None):
            raise PermissionDenied

    def obj_perms_manage_view(self, request: HttpRequest, object_pk: str) -> HttpResponse:
        self._require_change(request)
        return super().obj_perms_manage_view(request, object_pk)

    def obj_perms_manage_user_view(self, request: HttpRequest, object_pk: str, user_id: int) -> HttpResponse:
        self._require_change(request)
        return super().obj_perms_manage_user_view(request, object_pk, user_id)

    def obj_perms_manage_group_view(
        self, request: HttpRequest, object_pk: str, group_id: int
    ) -> HttpResponse:
        self._require_change(request)
        return super().obj_perms_manage_group_view(request, object_pk, group_id)


@admin.register(ClinicClient)
class ClinicClientAdmin(ClinicScopedAdminMixin, admin.ModelAdmin):
    list_display = ["application", "clinic", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["clinic", ("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["application", "clinic"]
    raw_id_fields = ["application"]
    search_fields = ["application__name", "application__client_id"]
    readonly_fields = ["created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    @admin.action(
        description="Revoke the selected clients now (tokens stop working at once)", permissions=["change"]
    )
    def revoke(self, request: HttpRequest, queryset: QuerySet[ClinicClient]) -> None:
        revoked = sum(
            services.clinic_client_revoke(clinic_client=client, actor=f"staff:{request.user.pk}")
            for client in queryset
        )
        self.message_user(request, f"Revoked {revoked} client(s).")


class AllergyInline(admin.TabularInline):
    model = Allergy
    extra = 0


class CurrentMedicationInline(admin.TabularInline):
    model = CurrentMedication
    extra = 0


class DiagnosisInline(admin.TabularInline):
    model = Diagnosis
    extra = 0


class ObservationInline(admin.TabularInline):
    model = Observation
    extra = 0


@admin.register(Patient)
class PatientAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, admin.ModelAdmin):
    list_display = ["id", "family_name", "given_name", "birth_date", "clinic", "created_at"]
    list_filter = ["clinic", "sex"]
    list_select_related = ["clinic"]
    list_defer = phi.phi_not_shown(shown=("family_name", "given_name", "birth_date"))
    # Identifiers are encrypted: search is exact, through the blind indexes (patients.phi):
    # an NHS number, an email, a phone number, or "<family name> <YYYY-MM-DD>".
    search_fields = ["=id"]
    search_help_text = 'Exact: patient id, NHS number, email, phone, or "Family-name YYYY-MM-DD".'
    sortable_by = ["id", "clinic", "created_at"]
    readonly_fields = ["created_at", "merged_into", "access_history"]
    inlines = [AllergyInline, CurrentMedicationInline, DiagnosisInline, ObservationInline]
    actions = ["merge_into_oldest"]

    # Merging rewrites patient records: the change permission, which no role holds (superusers).
    @admin.action(
        description="Merge the selected records of one person into the oldest of them", permissions=["change"]
    )
    def merge_into_oldest(self, request: HttpRequest, queryset: QuerySet[Patient]) -> None:
        records = sorted(queryset, key=lambda patient: patient.pk)
        if len(records) < 2:
            self.message_user(request, "Select at least two records of the same person.", messages.ERROR)
            return
        try:
            merged = services.patient_merge(
                keep=records[0], duplicates=records[1:], actor=f"staff:{request.user.pk}"
            )
        except DomainError as error:
            self.message_user(request, error.detail, messages.ERROR)
            return
        self.message_user(request, f"Merged {merged} record(s) into {records[0]}.")

    # Every page that shows a patient's identifiers is an access, recorded before it renders.
    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        changelist = (getattr(response, "context_data", None) or {}).get("cl")
        if changelist is not None:
            patient_access_record(
                patients=changelist.result_list,
                channel=PatientAccess.Channel.ADMIN,
                action=PatientAccess.Action.LIST,
                request=request,
                staff_user=staff_user_of(request),
            )
        return response

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        response = super().change_view(request, object_id, form_url, extra_context)
        patient = (getattr(response, "context_data", None) or {}).get("original")
        if patient is not None:
            patient_access_record(
                patients=[patient],
                channel=PatientAccess.Channel.ADMIN,
                action=PatientAccess.Action.DETAIL,
                request=request,
                staff_user=staff_user_of(request),
            )
        return response

    @admin.display(description="Access history")
    def access_history(self, obj: Patient) -> str:
        if obj.pk is None:
            return "—"
        accesses = PatientAccess.objects.filter(patient=obj).select_related("staff_user")[
            :ACCESS_HISTORY_SHOWN
        ]
        rows = format_html_join(
            "\n",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    access.accessed_at.strftime("%Y-%m-%d %H:%M:%S"),
                    access.who,
                    access.get_channel_display(),
                    access.get_action_display(),
                    access.remote_addr or "",
                )
                for access in accesses
            ),
        )
        everything = reverse("admin:audit_patientaccess_changelist") + f"?patient__id__exact={obj.pk}"
        return format_html(
            '<table class="access-history"><thead><tr><th>When</th><th>Who</th><th>Through</th>'
            "<th>What</th><th>From</th></tr></thead><tbody>{}</tbody></table>"
            '<p>Latest {} shown; <a href="{}">the full history</a>.</p>',
            rows,
            ACCESS_HISTORY_SHOWN,
            everything,
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Patient], search_term: str
    ) -> tuple[QuerySet[Patient], bool]:
        if not search_term.strip():
            return queryset, False
        matches = Q()
        for column, digest in phi.search_indexes(search_term):
            matches |= Q(**{column: digest})
        if search_term.strip().isdigit() and len(search_term.strip()) < 10:
            matches |= Q(pk=int(search_term.strip()))
        return queryset.filter(matches), False


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, admin.ModelAdmin):
    list_display = ["key", "clinic", "method", "path", "response_status", "created_at", "expires_at"]
    list_filter = ["clinic", "method", "response_status"]
    list_select_related = ["clinic"]
    search_fields = ["=key"]
    readonly_fields = [field.name for field in IdempotencyKey._meta.fields]

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
