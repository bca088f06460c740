from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from common.errors import DomainError
from pharmacy import services
from pharmacy.models import DeadLetter, Dispatch, GatewayWebhookEvent, OrderAlert
from saga import cancellation
from support.large_tables import LargeTableAdminMixin, distinct_values_filter
from support.scoping import ClinicScopedAdminMixin


@admin.register(Dispatch)
class DispatchAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, admin.ModelAdmin):
    clinic_path = "prescription__clinic"

    list_display = ["id", "prescription", "status", "attempts", "gateway_order_id", "updated_at"]
    list_filter = ["status"]
    list_select_related = ["prescription"]
    raw_id_fields = ["prescription"]
    search_fields = ["=prescription__id", "=gateway_order_id"]
    readonly_fields = [field.name for field in Dispatch._meta.fields]


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
