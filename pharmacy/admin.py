from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from common.errors import DomainError
from pharmacy import services
from pharmacy.adapters.registry import PartnerNotConfigured, partner_endpoint
from pharmacy.models import (
    DeadLetter,
    Dispatch,
    GatewayWebhookEvent,
    OrderAlert,
    Partner,
    PartnerStock,
    StockFeedEvent,
)
from pharmacy.routing import US_STATE_COUNT
from saga import cancellation
from support.large_tables import LargeTableAdminMixin, distinct_values_filter
from support.scoping import ClinicScopedAdminMixin


@admin.register(Dispatch)
class DispatchAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, admin.ModelAdmin):
    clinic_path = "prescription__clinic"

    list_display = ["id", "prescription", "status", "partner", "attempts", "gateway_order_id", "updated_at"]
    list_filter = ["status", "partner"]
    list_select_related = ["prescription", "partner"]
    raw_id_fields = ["prescription"]
    search_fields = ["=prescription__id", "=gateway_order_id"]
    readonly_fields = [
        *(field.name for field in Dispatch._meta.fields if field.name not in {"routing", "partners_tried"}),
        "routing_decision",
        "refused_by",
    ]
    exclude = ["routing", "partners_tried"]
    actions = ["route_again"]

    @admin.display(description="Routing decision")
    def routing_decision(self, dispatch: Dispatch) -> str:
        """The partner chosen (or none) and why each other partner was passed over."""
        decision = dispatch.routing or {}
        passed_over = decision.get("passed_over") or {}
        chosen = decision.get("chosen") or "none: waiting for an eligible partner"
        return format_html_join(
            mark_safe("<br>"),
            "{}: {}",
            [("chosen", chosen), *((code, why) for code, why in passed_over.items())],
        )

    @admin.display(description="Refused by")
    def refused_by(self, dispatch: Dispatch) -> str:
        tried = [entry for entry in dispatch.partners_tried if isinstance(entry, dict)]
        return ", ".join(f"{entry.get('partner')} ({entry.get('reason')})" for entry in tried) or "-"

    @admin.action(description="Route again (dispatches waiting for a partner)", permissions=["change"])
    def route_again(self, request: HttpRequest, queryset: QuerySet[Dispatch]) -> None:
        waiting = queryset.filter(status=Dispatch.Status.AWAITING_PARTNER).count()
        routed = services.dispatches_route_waiting()
        self.message_user(
            request,
            f"{len(routed)} waiting dispatch(es) found a partner; {max(waiting - len(routed), 0)} selected still wait.",
            messages.SUCCESS if routed else messages.WARNING,
        )


@admin.register(DeadLetter)
class DeadLetterAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, admin.ModelAdmin):
    clinic_path = "dispatch__prescription__clinic"

    list_display = ["id", "dispatch", "attempts", "error", "created_at", "resolved_at", "resolution"]
    list_filter = [("resolved_at", admin.EmptyFieldListFilter), "resolution"]
    list_select_related = ["dispatch__prescription"]
    raw_id_fields = ["dispatch"]
    search_fields = ["=dispatch__prescription__id"]
    readonly_fields = [*(field.name for field in DeadLetter._meta.fields), "refusal"]
    actions = ["replay", "cancel_with_compensation"]

    @admin.display(description="Refused by the gateway because")
    def refusal(self, letter: DeadLetter) -> str:
        """The rules the gateway said the message broke (its OperationOutcome), one a line."""
        issues = (letter.payload.get("operation_outcome") or {}).get("issue") or []
        if not issues:
            return "-"
        return format_html_join(
            mark_safe("<br>"),
            "{} {}: {}",
            (
                (
                    ", ".join(issue.get("details") or [issue.get("code", "")]),
                    ", ".join(issue.get("expression") or []),
                    issue.get("diagnostics", ""),
                )
                for issue in issues
            ),
        )

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("prescriptions.cancel_prescription")

    @admin.action(description="Replay: send again with the same idempotency key", permissions=["change"])
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        replayed = sum(
            services.dead_letter_replay(dead_letter_id=letter.pk, actor=f"user:{request.user.pk}")
            for letter in queryset.filter(resolved_at__isnull=True)
        )
        skipped = queryset.count() - replayed
        self.message_user(request, f"Replayed {replayed} dead letter(s).", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"{skipped} were already resolved and were left alone.", messages.WARNING
            )

    @admin.action(
        description="Cancel the prescription, with compensation (refund as needed)", permissions=["cancel"]
    )
    def cancel_with_compensation(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        for letter in queryset.filter(resolved_at__isnull=True):
            try:
                cancellation.dead_letter_cancel(dead_letter_id=letter.pk, actor=f"user:{request.user.pk}")
            except DomainError as error:
                self.message_user(request, f"Dead letter #{letter.pk}: {error.detail}", messages.WARNING)
            else:
                self.message_user(
                    request, f"Dead letter #{letter.pk}: prescription cancelled.", messages.SUCCESS
                )


@admin.register(GatewayWebhookEvent)
class GatewayWebhookEventAdmin(LargeTableAdminMixin, admin.ModelAdmin):
    list_display = ["event_id", "type", "order_id", "applied", "received_at"]
    list_filter = [distinct_values_filter("type"), "applied"]
    search_fields = ["=event_id", "=order_id"]
    readonly_fields = [field.name for field in GatewayWebhookEvent._meta.fields]


@admin.register(OrderAlert)
class OrderAlertAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, admin.ModelAdmin):
    """Orders the gateway went quiet about (pharmacy.services.orders_poll_stale), for operators."""

    clinic_path = "dispatch__prescription__clinic"

    list_display = ["id", "dispatch", "reason", "gateway_status", "created_at", "resolved_at"]
    list_filter = [("resolved_at", admin.EmptyFieldListFilter), "gateway_status"]
    list_select_related = ["dispatch__prescription"]
    raw_id_fields = ["dispatch"]
    search_fields = ["=dispatch__prescription__id", "=dispatch__gateway_order_id"]
    readonly_fields = [field.name for field in OrderAlert._meta.fields]
    actions = ["resolve"]

    @admin.action(description="Mark resolved", permissions=["change"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[OrderAlert]) -> None:
        resolved = sum(services.order_alert_resolve(alert_id=alert.pk) for alert in queryset)
        self.message_user(request, f"Resolved {resolved} alert(s).", messages.SUCCESS)


US_STATE_CODES_LENGTH = 2
SCHEDULE_PREFIXES = ("GB:", "US:")


class PartnerForm(forms.ModelForm):
    class Meta:
        model = Partner
        fields = [
            "code",
            "name",
            "is_active",
            "adapter",
            "base_url",
            "stock_csv_url",
            "status_by",
            "countries",
            "us_states",
            "controlled_schedules",
            "cold_chain",
            "therapy_areas",
            "fee_per_item_minor",
            "price_list",
            "capacity",
        ]

    def clean_countries(self) -> list[str]:
        countries = [code.strip().upper() for code in self.cleaned_data["countries"]]
        unknown = sorted(set(countries) - {"GB", "US"})
        if unknown:
            raise forms.ValidationError(f"Scriptline dispenses in GB and US only, not {', '.join(unknown)}.")
        return countries

    def clean_us_states(self) -> list[str]:
        states = [code.strip().upper() for code in self.cleaned_data["us_states"]]
        if any(len(state) != US_STATE_CODES_LENGTH or not state.isalpha() for state in states):
            raise forms.ValidationError("US states are two-letter codes, e.g. NY.")
        if len(set(states)) > US_STATE_COUNT:
            raise forms.ValidationError("More states than the US has.")
        return states

    def clean_controlled_schedules(self) -> list[str]:
        schedules = [code.strip().upper() for code in self.cleaned_data["controlled_schedules"]]
        if any(not schedule.startswith(SCHEDULE_PREFIXES) or len(schedule) < 4 for schedule in schedules):
            raise forms.ValidationError('Schedules name their country, e.g. "GB:2" or "US:II".')
        return schedules

    def clean_price_list(self) -> dict[str, Any]:
        prices = self.cleaned_data["price_list"]
        if not isinstance(prices, dict) or not all(
            isinstance(price, int) and not isinstance(price, bool) and price >= 0 for price in prices.values()
        ):
            raise forms.ValidationError("A price list maps product codes to whole prices in minor units.")
        return prices


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    """Pharmacy partners routing may choose (operators); saving one routes waiting dispatches again."""

    form = PartnerForm
    list_display = [
        "code",
        "name",
        "is_active",
        "adapter",
        "status_by",
        "countries",
        "capacity",
        "configured",
    ]
    list_filter = ["is_active", "adapter", "status_by"]
    list_select_related = False
    search_fields = ["code", "name"]
    readonly_fields = ["created_at", "updated_at", "configured"]

    @admin.display(description="URL and keys", boolean=True)
    def configured(self, partner: Partner) -> bool:
        try:
            partner_endpoint(partner)
        except PartnerNotConfigured:
            return False
        return True

    def has_delete_permission(self, request: HttpRequest, obj: Partner | None = None) -> bool:
        return False  # dispatches keep their partner: deactivate instead

    def save_model(self, request: HttpRequest, obj: Partner, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        services.dispatches_route_waiting_owe()


@admin.register(PartnerStock)
class PartnerStockAdmin(LargeTableAdminMixin, admin.ModelAdmin):
    list_display = ["partner", "product_code", "quantity", "source", "updated_at"]
    list_filter = ["partner", "source"]
    list_select_related = ["partner"]
    raw_id_fields = ["partner"]
    search_fields = ["=product_code"]
    readonly_fields = [field.name for field in PartnerStock._meta.fields]


@admin.register(StockFeedEvent)
class StockFeedEventAdmin(LargeTableAdminMixin, admin.ModelAdmin):
    list_display = ["event_id", "partner", "items", "received_at"]
    list_filter = ["partner"]
    list_select_related = ["partner"]
    raw_id_fields = ["partner"]
    search_fields = ["=event_id"]
    readonly_fields = [field.name for field in StockFeedEvent._meta.fields]
