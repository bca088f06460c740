from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html_join

from config.problems import Problem
from events.services import events_for
from prescriptions import services
from prescriptions.models import (
    Medication,
    PharmacistReview,
    Prescriber,
    Prescription,
    PrescriptionItem,
    Status,
)
from support.scoping import ClinicScopedAdminMixin
from support.services import staff_can_decide


@admin.register(Medication)
class MedicationAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "strength",
        "form",
        "code_system",
        "code",
        "controlled_schedule",
        "price_minor",
        "is_active",
    ]
    list_filter = ["controlled_schedule", "form", "code_system", "is_active"]
    search_fields = ["name", "=code"]


@admin.register(Prescriber)
class PrescriberAdmin(ClinicScopedAdminMixin, admin.ModelAdmin):
    list_display = ["family_name", "given_name", "registration_body", "registration_number", "clinic"]
    list_filter = ["registration_body", "clinic"]
    list_select_related = ["clinic"]
    search_fields = ["family_name", "=registration_number"]


class ItemInline(admin.TabularInline):
    model = PrescriptionItem
    extra = 0
    raw_id_fields = ["medication"]
    readonly_fields = ["medication", "dose_text", "quantity", "unit", "days_supply"]
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


class ReviewInline(admin.TabularInline):
    model = PharmacistReview
    extra = 0
    readonly_fields = ["pharmacist", "decision", "reason", "decided_at"]
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=PharmacistReview.Decision.choices, widget=forms.RadioSelect)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)


@admin.register(Prescription)
class PrescriptionAdmin(ClinicScopedAdminMixin, admin.ModelAdmin):
    list_display = ["id", "status", "clinic", "patient", "issued_on", "created_at", "updated_at"]
    list_filter = ["status", "clinic"]
    list_select_related = ["clinic", "patient"]
    raw_id_fields = ["patient", "prescriber", "clinic"]
    search_fields = ["=id", "=tracking_number"]
    readonly_fields = [
        "clinic",
        "patient",
        "prescriber",
        "status",
        "status_reason",
        "issued_on",
        "note",
        "check_results_display",
        "tracking_number",
        "created_at",
        "updated_at",
        "timeline",
    ]
    exclude = ["check_results"]
    inlines = [ItemInline, ReviewInline]
    show_full_result_count = False
    change_form_template = "admin/prescriptions/prescription/change_form.html"

    @admin.display(description="Check results")
    def check_results_display(self, obj: Prescription) -> str:
        return (
            format_html_join(
                "\n",
                "<div><b>{}</b> [{}] {} <i>({})</i></div>",
                ((r["severity"], r["code"], r["message"], r["source"]) for r in obj.check_results),
            )
            or "—"
        )

    @admin.display(description="Timeline")
    def timeline(self, obj: Prescription) -> str:
        events = events_for(aggregate_type="prescription", aggregate_id=obj.pk)
        return (
            format_html_join(
                "\n",
                "<div>{}. {} — {} <small>({})</small></div>",
                ((e.sequence, e.created_at.strftime("%Y-%m-%d %H:%M:%S"), e.type, e.actor) for e in events),
            )
            or "—"
        )

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False  # prescriptions arrive through the clinic API

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):  # type: ignore[no-untyped-def]
        extra_context = {**(extra_context or {}), "can_decide": staff_can_decide(request.user)}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):  # type: ignore[no-untyped-def]
        review = self.admin_site.admin_view(self.review_view)
        return [
            path("<int:pk>/review/", review, name="prescriptions_prescription_review"),
            *super().get_urls(),
        ]

    def review_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not (
            request.user.has_perm("prescriptions.add_pharmacistreview") and staff_can_decide(request.user)
        ):
            raise PermissionDenied
        prescription = get_object_or_404(self.get_queryset(request), pk=pk)
        form = ReviewForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                services.prescription_review(
                    prescription_id=pk,
                    pharmacist=request.user,
                    decision=form.cleaned_data["decision"],
                    reason=form.cleaned_data["reason"],
                )
            except Problem as problem:
                self.message_user(request, str(problem.detail), messages.ERROR)
            else:
                self.message_user(request, "Decision recorded.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:prescriptions_prescription_change", args=[pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "prescription": prescription,
            "form": form,
            "title": f"Review {prescription}",
            "awaiting": prescription.status == Status.AWAITING_PHARMACIST,
        }
        return TemplateResponse(request, "admin/prescriptions/prescription/review.html", context)
