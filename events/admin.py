from django.contrib import admin

from events.models import Event, OutboxMessage, ProcessedEvent
from support.scoping import ClinicScopedAdminMixin


class ReadOnlyAdmin(admin.ModelAdmin):
    """The event log is append-only: staff may read it, never change it."""

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(Event)
class EventAdmin(ClinicScopedAdminMixin, ReadOnlyAdmin):
    clinic_path = "clinic_id"
    list_display = ["id", "aggregate_type", "aggregate_id", "sequence", "type", "actor", "created_at"]
    list_filter = ["aggregate_type", "type"]
    search_fields = ["=aggregate_id", "type"]
    show_full_result_count = False


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "event", "published_at", "attempts", "created_at"]
    list_filter = [("published_at", admin.EmptyFieldListFilter)]
    list_select_related = ["event"]
    raw_id_fields = ["event"]
    show_full_result_count = False


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "consumer", "event", "processed_at"]
    list_filter = ["consumer"]
    list_select_related = ["event"]
    search_fields = ["=event__id"]
