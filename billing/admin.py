"""Finance back office: payments (with Stripe reconciliation), refunds, the cancellation staff
queue, NHS charges, charge rates and monthly claim batches (with CSV export)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, TypedDict

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Model, Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from billing.models import (
    CancellationRequest,
    ClaimBatch,
    ClaimItem,
    NhsCharge,
    NhsChargeRate,
    Payment,
    Refund,
    StripeEvent,
)
from billing.payments import PaymentError
from billing.services import nhs, payments
from support.large_tables import LargeTableAdminMixin, distinct_values_filter
from support.scoping import ClinicScopedAdminMixin

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Payment)
class PaymentAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, ReadOnlyAdmin):
    list_display = ["id", "prescription", "clinic", "status", "amount_minor", "currency", "created_at"]
    # A date filter, not date_hierarchy: its drill-down reads every row's date.
    list_filter = [
        "status",
        "clinic",
        distinct_values_filter("currency"),
        ("created_at", admin.DateFieldListFilter),
    ]
    list_select_related = ["prescription", "clinic"]
    raw_id_fields = ["prescription", "clinic"]
    search_fields = ["=prescription__id", "=stripe_payment_intent_id"]
    readonly_fields = [field.name for field in Payment._meta.fields if field.name != "client_secret"]
    exclude = ["client_secret"]
    actions = ["sync_from_stripe"]
    change_list_template = "admin/billing/payment/change_list.html"

    @admin.action(
        description="Sync from Stripe (apply Stripe's state, as a lost webhook would)", permissions=["change"]
    )
    def sync_from_stripe(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        for payment in queryset.exclude(stripe_payment_intent_id=""):
            try:
                outcome = payments.payment_sync(payment_id=payment.pk)
            except PaymentError as error:
                self.message_user(request, f"Payment #{payment.pk}: {error}", messages.ERROR)
            else:
                self.message_user(request, f"Payment #{payment.pk}: {outcome}", messages.INFO)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.reconciliation_view)
        return [path("reconciliation/", view, name="billing_payment_reconciliation"), *super().get_urls()]

    def reconciliation_view(self, request: HttpRequest) -> HttpResponse:
        """Unsettled payments of the user's clinics whose state disagrees with Stripe's (POST
        syncs one): the same permission as the sync action."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        # Only payments this user's admin would list (their clinics) are asked about or synced.
        in_scope = self.get_queryset(request)
        if request.method == "POST" and request.POST.get("payment_id", "").isdigit():
            payment_id = int(request.POST["payment_id"])
            if not in_scope.filter(pk=payment_id).exists():
                self.message_user(request, f"Could not sync: no payment #{payment_id}.", messages.ERROR)
                return HttpResponseRedirect(reverse("admin:billing_payment_reconciliation"))
            try:
                outcome = payments.payment_sync(payment_id=payment_id)
            except PaymentError as error:
                self.message_user(request, f"Could not sync: {error}", messages.ERROR)
            else:
                self.message_user(request, f"Synced: {outcome}.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:billing_payment_reconciliation"))
        try:
            mismatches = payments.payment_reconcile(payment_ids=in_scope.values("pk"))
            unreachable = ""
        except PaymentError as failure:
            mismatches, unreachable = [], f"Stripe could not be asked: {failure}"
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Stripe reconciliation",
            "mismatches": mismatches,
            "error": unreachable,
        }
        return TemplateResponse(request, "admin/billing/payment/reconciliation.html", context)


@admin.register(Refund)
class RefundAdmin(LargeTableAdminMixin, ReadOnlyAdmin):
    list_display = ["id", "payment", "status", "amount_minor", "created_at", "completed_at"]
    list_filter = ["status", "payment__clinic", ("created_at", admin.DateFieldListFilter)]
    list_select_related = ["payment"]
    raw_id_fields = ["payment"]
    search_fields = ["=payment__prescription__id", "=stripe_refund_id"]
    readonly_fields = [field.name for field in Refund._meta.fields]
    actions = ["retry"]

    @admin.action(description="Send again (same idempotency key)", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Refund]) -> None:
        for refund in queryset.filter(status=Refund.Status.PENDING):
            try:
                outcome = payments.refund_send(refund_id=refund.pk)
            except PaymentError as error:
                outcome = str(error)
            self.message_user(request, f"Refund #{refund.pk}: {outcome}")


@admin.register(StripeEvent)
class StripeEventAdmin(LargeTableAdminMixin, ReadOnlyAdmin):
    list_display = ["event_id", "type", "payment_intent_id", "applied", "received_at"]
    list_filter = [distinct_values_filter("type"), "applied"]
    search_fields = ["=event_id", "=payment_intent_id"]
    readonly_fields = [field.name for field in StripeEvent._meta.fields]


@admin.register(CancellationRequest)
class CancellationRequestAdmin(LargeTableAdminMixin, ReadOnlyAdmin):
    list_display = [
        "id",
        "prescription",
        "clinic",
        "status_when_requested",
        "needs_refund",
        "created_at",
        "resolved_at",
    ]
    list_filter = [
        ("resolved_at", admin.EmptyFieldListFilter),
        "clinic",
        distinct_values_filter("status_when_requested"),
    ]
    list_select_related = ["prescription", "clinic"]
    raw_id_fields = ["prescription", "clinic", "payment"]
    search_fields = ["=prescription__id"]
    readonly_fields = [field.name for field in CancellationRequest._meta.fields]
    actions = ["resolve"]

    @admin.display(boolean=True, description="Refund needed")
    def needs_refund(self, obj: CancellationRequest) -> bool:
        return obj.needs_refund

    @admin.action(description="Mark resolved (handled by hand)", permissions=["change"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[CancellationRequest]) -> None:
        resolved = sum(
            payments.cancellation_request_resolve(
                request_id=item.pk, resolution="resolved by staff", actor=f"user:{request.user.pk}"
            )
            for item in queryset
        )
        self.message_user(request, f"Resolved {resolved} request(s).")


@admin.register(NhsChargeRate)
class NhsChargeRateAdmin(admin.ModelAdmin):
    list_display = ["effective_from", "amount_minor", "source"]
    search_fields = ["source"]


@admin.register(NhsCharge)
class NhsChargeAdmin(LargeTableAdminMixin, ReadOnlyAdmin):
    list_display = [
        "id",
        "prescription",
        "clinic",
        "exemption_category",
        "exemption_verified",
        "total_minor",
        "recorded_at",
    ]
    list_filter = [
        distinct_values_filter("exemption_category"),
        "exemption_verified",
        "clinic",
        ("recorded_at", admin.DateFieldListFilter),
    ]
    list_select_related = ["prescription", "clinic"]
    raw_id_fields = ["prescription", "clinic", "rate"]
    search_fields = ["=prescription__id"]
    readonly_fields = [field.name for field in NhsCharge._meta.fields]


class ClaimItemInline(admin.TabularInline):
    model = ClaimItem
    extra = 0
    can_delete = False
    raw_id_fields = ["prescription_item", "prescription", "clinic"]
    readonly_fields = [
        "prescription",
        "prescription_item",
        "clinic",
        "dispensed_at",
        "exemption_category",
        "charge_collected_minor",
    ]

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class BuildClaimForm(forms.Form):
    month = forms.CharField(help_text="YYYY-MM", max_length=7)

    def clean_month(self) -> date:
        try:
            year, month = (int(part) for part in self.cleaned_data["month"].split("-"))
            return date(year, month, 1)
        except ValueError as error:
            raise forms.ValidationError("Give the month as YYYY-MM.") from error


class BatchTotals(TypedDict):
    """What the claim batch list annotates each batch with."""

    item_total: int
    exempt_total: int
    charges_total: int


@admin.register(ClaimBatch)
class ClaimBatchAdmin(ReadOnlyAdmin):
    list_display = [
        "month",
        "status",
        "item_count",
        "exempt_count",
        "charges_collected",
        "built_at",
        "submitted_at",
    ]
    list_filter = ["status"]
    readonly_fields = ["month", "status", "created_at", "built_at", "submitted_at"]
    inlines = [ClaimItemInline]
    actions = ["rebuild", "export_csv", "submit"]
    change_list_template = "admin/billing/claimbatch/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ClaimBatch]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                item_total=Count("items"),
                exempt_total=Count("items", filter=~Q(items__exemption_category="")),
                charges_total=Sum("items__charge_collected_minor", default=0),
            )
        )

    @admin.display(description="Items", ordering="item_total")
    def item_count(self, obj: WithAnnotations[ClaimBatch, BatchTotals]) -> int:
        return obj.item_total

    @admin.display(description="Exempt items")
    def exempt_count(self, obj: WithAnnotations[ClaimBatch, BatchTotals]) -> int:
        return obj.exempt_total

    @admin.display(description="Charges collected (pence)")
    def charges_collected(self, obj: WithAnnotations[ClaimBatch, BatchTotals]) -> int:
        return obj.charges_total

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.build_view)
        return [path("build/", view, name="billing_claimbatch_build"), *super().get_urls()]

    def build_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("billing.change_claimbatch"):
            return HttpResponse(status=403)
        form = BuildClaimForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            batch = nhs.claim_batch_build(month=form.cleaned_data["month"])
            self.message_user(request, f"Built {batch}.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:billing_claimbatch_change", args=[batch.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Build a month's NHS claim",
            "form": form,
        }
        return TemplateResponse(request, "admin/billing/claimbatch/build.html", context)

    @admin.action(description="Rebuild (add items dispensed and not yet claimed)", permissions=["change"])
    def rebuild(self, request: HttpRequest, queryset: QuerySet[ClaimBatch]) -> None:
        for batch in queryset:
            nhs.claim_batch_build(month=batch.month)
        self.message_user(request, f"Rebuilt {queryset.count()} batch(es).")

    @admin.action(description="Mark submitted (freeze)", permissions=["change"])
    def submit(self, request: HttpRequest, queryset: QuerySet[ClaimBatch]) -> None:
        submitted = sum(nhs.claim_batch_submit(batch_id=batch.pk) for batch in queryset)
        self.message_user(request, f"Submitted {submitted} batch(es).")

    @admin.action(description="Export CSV (one batch)", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[ClaimBatch]) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one batch to export.", messages.WARNING)
            return None
        batch = queryset.get()
        response = HttpResponse(nhs.claim_batch_csv(batch_id=batch.pk), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="nhs-claim-{batch.month:%Y-%m}.csv"'
        return response
