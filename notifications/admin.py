from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from notifications.models import Notification
from patients import phi
from support.large_tables import LargeTableAdminMixin, distinct_values_filter
from support.scoping import ClinicScopedAdminMixin


@admin.register(Notification)
class NotificationAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, admin.ModelAdmin):
    clinic_path = "patient__clinic"
    list_display = ["id", "kind", "channel", "status", "patient", "prescription_id", "created_at", "sent_at"]
    list_filter = ["status", "channel", distinct_values_filter("kind")]
    list_select_related = ["patient"]
    list_defer = phi.phi_not_shown("patient")
    raw_id_fields = ["event", "patient"]
    search_fields = ["=prescription_id", "=patient__id"]
    readonly_fields = [field.name for field in Notification._meta.fields]

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
