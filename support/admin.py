from django.contrib import admin

from support.models import StaffProfile


@admin.register(StaffProfile)
class StaffProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "professional_registration", "updated_at"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    search_fields = ["user__username", "=professional_registration"]
    readonly_fields = ["created_at", "updated_at"]
