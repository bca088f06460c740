from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from audit.models import PatientAccess
from patients import phi
from support.large_tables import LargeTableAdminMixin
from support.scoping import ClinicScopedAdminMixin


@admin.register(PatientAccess)
class PatientAccessAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, admin.ModelAdmin):
    """Append-only: readable, never added, changed or deleted here (nor in the database)."""

    list_display = [
        "accessed_at",
        "patient",
        "clinic",
        "channel",
        "action",
        "staff_user",
        "client_id",
        "remote_addr",
    ]
    list_filter = ["channel", "action", "clinic"]
    list_select_related = ["patient", "clinic", "staff_user"]
    list_defer = phi.phi_not_shown("patient")
    raw_id_fields = ["patient", "clinic", "staff_user"]
    search_fields = ["=patient__id", "=client_id", "=staff_user__username", "=request_id"]
    readonly_fields = [field.name for field in PatientAccess._meta.fields]

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
