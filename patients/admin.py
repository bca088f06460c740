from django.contrib import admin

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


@admin.register(Clinic)
class ClinicAdmin(admin.ModelAdmin):
    list_display = ["name", "jurisdiction", "currency", "ods_code", "created_at"]
    list_filter = ["jurisdiction"]
    search_fields = ["name", "ods_code"]


@admin.register(ClinicClient)
class ClinicClientAdmin(admin.ModelAdmin):
    list_display = ["application", "clinic", "created_at"]
    list_filter = ["clinic"]
    list_select_related = ["application", "clinic"]
    raw_id_fields = ["application"]
    search_fields = ["application__name", "application__client_id"]


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
class PatientAdmin(admin.ModelAdmin):
    list_display = ["id", "family_name", "given_name", "birth_date", "clinic", "created_at"]
    list_filter = ["clinic", "sex"]
    list_select_related = ["clinic"]
    search_fields = ["=id", "=nhs_number", "family_name", "=email"]
    readonly_fields = ["created_at"]
    inlines = [AllergyInline, CurrentMedicationInline, DiagnosisInline, ObservationInline]
    show_full_result_count = False


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(admin.ModelAdmin):
    list_display = ["key", "clinic", "method", "path", "response_status", "created_at", "expires_at"]
    list_filter = ["clinic", "method", "response_status"]
    list_select_related = ["clinic"]
    search_fields = ["=key"]
    readonly_fields = [field.name for field in IdempotencyKey._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False
