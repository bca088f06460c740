from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from audit.models import PatientAccess
from audit.services import patient_access_record
from common.auth import staff_user_of
from common.errors import DomainError
from events.services import events_for
from patients import phi
from patients.models import Observation
from prescriptions import repeats, selectors, services
from prescriptions.models import (
    AllergyClass,
    FormularyRelease,
    InteractionRule,
    Medication,
    PaediatricDoseRule,
    PharmacistProfile,
    PharmacistQueue,
    PharmacistReview,
    Prescriber,
    Prescription,
    PrescriptionItem,
    RepeatSeries,
    Status,
)
from saga import cancellation
from support.large_tables import LargeTableAdminMixin, QuickCheckboxAdminMixin
from support.scoping import ClinicScopedAdminMixin
from support.services import staff_can_decide
from support.templatetags.backoffice import waited

SEVERITY_ORDER = {"block": 0, "needs_pharmacist": 1, "info": 2}


@admin.register(Medication)
class MedicationAdmin(QuickCheckboxAdminMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "strength",
        "form",
        "code_system",
        "code",
        "controlled_schedule",
        "therapeutic_class",
        "max_daily_dose",
        "price_minor",
        "is_active",
    ]
    list_filter = ["controlled_schedule", "therapeutic_class", "code_system", "is_active"]
    search_fields = ["name", "=code"]
    readonly_fields = ["code_system", "code"]


@admin.register(InteractionRule)
class InteractionRuleAdmin(QuickCheckboxAdminMixin, admin.ModelAdmin):
    list_display = ["left", "right", "severity", "message", "source"]
    list_filter = ["severity"]
    search_fields = ["left", "right"]


@admin.register(AllergyClass)
class AllergyClassAdmin(admin.ModelAdmin):
    list_display = ["name", "aliases", "ingredients", "source"]
    search_fields = ["name"]


@admin.register(PaediatricDoseRule)
class PaediatricDoseRuleAdmin(QuickCheckboxAdminMixin, admin.ModelAdmin):
    """Children's dose limits, loaded from the formulary file (read here, changed there)."""

    list_display = [
        "name",
        "ingredient",
        "min_age_months",
        "max_age_months",
        "min_weight_kg",
        "max_weight_kg",
        "max_dose",
        "max_daily",
        "max_daily_per_kg",
        "weight_required",
        "contraindicated",
    ]
    list_filter = ["weight_required", "contraindicated", "ingredient"]
    search_fields = ["name", "ingredient"]
    readonly_fields = [field.name for field in PaediatricDoseRule._meta.fields]

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # loaded by manage.py load_formulary


@admin.register(FormularyRelease)
class FormularyReleaseAdmin(admin.ModelAdmin):
    list_display = ["version", "loaded_at"]
    readonly_fields = ["version", "loaded_at", "summary"]

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # releases are recorded by manage.py load_formulary


@admin.register(PharmacistProfile)
class PharmacistProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "registration_body", "registration_number", "created_at"]
    list_filter = ["registration_body"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    search_fields = ["user__username", "=registration_number"]


@admin.register(Prescriber)
class PrescriberAdmin(ClinicScopedAdminMixin, admin.ModelAdmin):
    list_display = [
        "family_name",
        "given_name",
        "registration_body",
        "registration_number",
        "controlled_drugs_authorised",
        "clinic",
    ]
    list_filter = ["registration_body", "controlled_drugs_authorised", "clinic"]
    list_select_related = ["clinic"]
    raw_id_fields = ["user", "clinic"]
    search_fields = ["family_name", "=registration_number", "=dea_number"]


class ItemInline(admin.TabularInline):
    model = PrescriptionItem
    extra = 0
    raw_id_fields = ["medication"]
    readonly_fields = [
        "medication",
        "dose_text",
        "quantity",
        "quantity_words",
        "unit",
        "days_supply",
        "units_per_day",
        "units_per_dose",
    ]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ReviewInline(admin.TabularInline):
    model = PharmacistReview
    extra = 0
    readonly_fields = ["pharmacist", "decision", "reason", "decided_at"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=PharmacistReview.Decision.choices, widget=forms.RadioSelect)
    reason = forms.CharField(
        required=True,
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
        help_text="Required: recorded with the decision, and sent to the clinic on a rejection.",
    )


@admin.register(Prescription)
class PrescriptionAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, admin.ModelAdmin):
    list_display = ["id", "status", "clinic", "patient", "issued_on", "created_at", "updated_at"]
    list_filter = ["status", "clinic"]
    list_select_related = ["clinic", "patient"]
    list_defer = phi.phi_not_shown("patient", shown=("given_name", "family_name"))
    raw_id_fields = ["patient", "prescriber", "clinic"]
    search_fields = ["=id", "=tracking_number", "=eps_prescription_id"]
    readonly_fields = [
        "eps_prescription_id",
        "clinic",
        "patient",
        "prescriber",
        "status",
        "status_reason",
        "issued_on",
        "note",
        "repeats",
        "earliest_fill_date",
        "clinical_justification",
        "two_factor_signed_at",
        "check_results_display",
        "tracking_number",
        "created_at",
        "updated_at",
        "timeline",
        "previous",
        "link_kind",
        "repeat_interval_days",
    ]
    exclude = ["check_results"]
    inlines = [ItemInline, ReviewInline]
    change_form_template = "admin/prescriptions/prescription/change_form.html"
    # Pharmacists cancel with compensation (gateway cancellation, refund); support asks for a
    # cancellation from the patient page, with a reason, within their clinics.
    actions = ["cancel_with_compensation"]

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("prescriptions.cancel_prescription")

    @admin.action(
        description="Cancel, with compensation (gateway cancellation and refund as needed)",
        permissions=["cancel"],
    )
    def cancel_with_compensation(self, request: HttpRequest, queryset: QuerySet[Prescription]) -> None:
        for prescription in queryset:
            try:
                cancellation.prescription_cancel_request(
                    clinic=None,
                    prescription_id=prescription.pk,
                    reason="Cancelled by staff",
                    actor=f"user:{request.user.pk}",
                )
            except DomainError as error:
                self.message_user(request, f"#{prescription.pk}: {error.detail}", messages.WARNING)
            else:
                self.message_user(request, f"#{prescription.pk}: cancellation under way.", messages.SUCCESS)

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
                "<div>{}. {} — {} <small>({})</small>{}</div>",
                (
                    (
                        e.sequence,
                        e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                        e.type,
                        e.actor,
                        # Routing says why in a PHI-free summary (partner names and reasons).
                        f" {e.payload['summary']}"[:300] if e.payload.get("summary") else "",
                    )
                    for e in events
                ),
            )
            or "—"
        )

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # prescriptions arrive through the clinic API

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    # Staff who may read patient records see the patient's name, not "Patient #8"; the list is
    # then a read of those patients, recorded in the access log like the patient list.
    def get_list_display(self, request: HttpRequest) -> list[Any]:
        shown = list(super().get_list_display(request))
        if request.user.has_perm("patients.view_patient"):
            shown[shown.index("patient")] = "patient_name"
        return shown

    @admin.display(description="Patient", ordering="patient_id")
    def patient_name(self, obj: Prescription) -> str:
        return f"{obj.patient.given_name} {obj.patient.family_name} (#{obj.patient_id})"

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        changelist = (getattr(response, "context_data", None) or {}).get("cl")
        if changelist is not None and "patient_name" in changelist.list_display:
            patients = {
                prescription.patient_id: prescription.patient for prescription in changelist.result_list
            }
            patient_access_record(
                patients=patients.values(),
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
        extra_context = {**(extra_context or {}), "can_decide": staff_can_decide(staff_user_of(request))}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[URLPattern]:
        review = self.admin_site.admin_view(self.review_view)
        return [
            path("<int:pk>/review/", review, name="prescriptions_prescription_review"),
            *super().get_urls(),
        ]

    def review_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """One screen: check results, the patient's allergies, medicines, monitoring and previous
        controlled-drug supplies, and the decision form."""
        if not (
            request.user.has_perm("prescriptions.add_pharmacistreview")
            and staff_can_decide(staff_user_of(request))
        ):
            raise PermissionDenied
        prescription = get_object_or_404(
            self.get_queryset(request)
            .select_related("clinic", "patient", "prescriber")
            .prefetch_related("items__medication", "reviews__pharmacist"),
            pk=pk,
        )
        form = ReviewForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                services.prescription_review(
                    prescription_id=pk,
                    pharmacist=staff_user_of(request),
                    decision=form.cleaned_data["decision"],
                    reason=form.cleaned_data["reason"],
                )
            except DomainError as error:
                self.message_user(request, error.detail, messages.ERROR)
                return HttpResponseRedirect(reverse("admin:prescriptions_prescription_review", args=[pk]))
            self.message_user(request, f"Decision recorded on {prescription}.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:prescriptions_pharmacistqueue_changelist"))
        patient = prescription.patient
        results = sorted(prescription.check_results, key=lambda r: SEVERITY_ORDER.get(r["severity"], 9))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "prescription": prescription,
            "patient": patient,
            "items": list(prescription.items.all()),
            "results": results,
            "titration": [r for r in results if r["code"] == "titration.step"],
            "allergies": list(patient.allergies.all()),
            "current_medications": list(patient.current_medications.all()),
            "diagnoses": list(patient.diagnoses.all()[:10]),
            "observations": list(Observation.objects.filter(patient_id=patient.pk)[:9]),
            "controlled_supplies": selectors.controlled_supplies(
                patient_id=patient.pk, exclude_id=prescription.pk
            ),
            "reviews": list(prescription.reviews.all()),
            "form": form,
            "title": f"Pharmacist review of {prescription}",
            "awaiting": prescription.status == Status.AWAITING_PHARMACIST,
            "may_decide": services.pharmacist_may_decide(staff_user_of(request)),
            "own_prescription": prescription.prescriber.user_id == request.user.pk,
            "prescriber": prescription.prescriber,
            "waiting_since": prescription.updated_at
            if prescription.status == Status.AWAITING_PHARMACIST
            else None,
            "next_url": _next_in_queue_url(after=prescription.pk),
        }
        return TemplateResponse(request, "admin/prescriptions/prescription/review.html", context)


def _next_in_queue_url(*, after: int) -> str:
    """The review of the next prescription waiting (after this one, else from the start)."""
    waiting = Prescription.objects.filter(status=Status.AWAITING_PHARMACIST).order_by("id")
    following = waiting.filter(id__gt=after).values_list("id", flat=True).first()
    following = following or waiting.exclude(id=after).values_list("id", flat=True).first()
    if following is None:
        return reverse("admin:prescriptions_pharmacistqueue_changelist")
    return reverse("admin:prescriptions_prescription_review", args=[following])


@admin.register(PharmacistQueue)
class PharmacistQueueAdmin(LargeTableAdminMixin, admin.ModelAdmin):
    """Prescriptions awaiting a pharmacist, oldest first; each row opens the one-screen review."""

    list_display = ["review_link", "waiting_since", "waited", "clinic", "medicines", "flags", "controlled"]
    list_display_links = None
    list_filter = ["clinic"]
    list_select_related = ["clinic"]
    search_fields = ["=id"]
    list_per_page = 100
    ordering = ["id"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[PharmacistQueue]:
        return (
            super()
            .get_queryset(request)
            .filter(status=Status.AWAITING_PHARMACIST)
            .prefetch_related("items__medication")
        )

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.has_perm("prescriptions.add_pharmacistreview")

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    @admin.display(description="Prescription")
    def review_link(self, obj: Prescription) -> str:
        url = reverse("admin:prescriptions_prescription_review", args=[obj.pk])
        return format_html('<a href="{}">Review #{}</a>', url, obj.pk)

    @admin.display(description="Waiting since", ordering="id")
    def waiting_since(self, obj: Prescription) -> str:
        # Entering the queue is the prescription's last status change (the checks' verdict).
        return timezone.localtime(obj.updated_at).strftime("%Y-%m-%d %H:%M")

    @admin.display(description="Waited", ordering="updated_at")
    def waited(self, obj: Prescription) -> str:
        limit = timedelta(minutes=settings.DASHBOARD_THRESHOLDS["oldest_awaiting_pharmacist_minutes"])
        css = "waited-long" if timezone.now() - obj.updated_at > limit else "waited"
        return format_html('<span class="{}">{}</span>', css, waited(obj.updated_at))

    @admin.display(description="Medicines")
    def medicines(self, obj: Prescription) -> str:
        return "; ".join(f"{item.medication} x {item.quantity.normalize():f}" for item in obj.items.all())

    @admin.display(description="Flags")
    def flags(self, obj: Prescription) -> str:
        wanted = [r for r in obj.check_results if r["severity"] != "info" or r["code"] == "titration.step"]
        return "; ".join(r["code"] for r in wanted) or "—"

    @admin.display(description="CD", boolean=True)
    def controlled(self, obj: Prescription) -> bool:
        return any(item.medication.is_controlled for item in obj.items.all())


# --- Repeat series --------------------------------------------------------------------------------


@admin.register(RepeatSeries)
class RepeatSeriesAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, admin.ModelAdmin):
    clinic_path = "origin__clinic"
    list_display = [
        "id",
        "origin",
        "latest",
        "status",
        "issued_count",
        "repeats_total",
        "interval_days",
        "next_due_on",
    ]
    list_filter = ["status"]
    list_select_related = ["origin", "latest"]
    raw_id_fields = ["origin", "latest"]
    search_fields = ["=origin__id", "=latest__id"]
    readonly_fields = [field.name for field in RepeatSeries._meta.fields]
    actions = ["pause", "resume", "stop"]

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def _apply(
        self, request: HttpRequest, queryset: QuerySet[RepeatSeries], service: Callable[..., bool], verb: str
    ) -> None:
        changed = sum(service(series_id=series.pk, actor=f"user:{request.user.pk}") for series in queryset)
        self.message_user(request, f"{verb} {changed} series.", messages.SUCCESS)
        if skipped := queryset.count() - changed:
            self.message_user(
                request, f"{skipped} could not be {verb.lower()} from their status.", messages.WARNING
            )

    @admin.action(description="Pause: issue no repeats until resumed", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[RepeatSeries]) -> None:
        self._apply(request, queryset, repeats.repeat_series_pause, "Paused")

    @admin.action(description="Resume a paused series", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[RepeatSeries]) -> None:
        self._apply(request, queryset, repeats.repeat_series_resume, "Resumed")

    @admin.action(description="Stop: issue no more repeats, for good", permissions=["change"])
    def stop(self, request: HttpRequest, queryset: QuerySet[RepeatSeries]) -> None:
        self._apply(request, queryset, repeats.repeat_series_stop, "Stopped")
