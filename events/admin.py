from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from events import webhooks
from events.adapters.http import webhook_target_refusal
from events.models import (
    ClinicWebhookEndpoint,
    Event,
    OutboxMessage,
    ProcessedEvent,
    WebhookAttempt,
    WebhookDelivery,
)
from support.large_tables import LargeTableAdminMixin, distinct_values_filter
from support.scoping import ClinicScopedAdminMixin


class ReadOnlyAdmin(admin.ModelAdmin):
    """The event log is append-only: staff may read it, never change it."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, ReadOnlyAdmin):
    clinic_path = "clinic_id"
    list_display = ["id", "aggregate_type", "aggregate_id", "sequence", "type", "actor", "created_at"]
    list_filter = [distinct_values_filter("aggregate_type"), distinct_values_filter("type")]
    # Exact matches only: each is an index lookup, where a substring search reads the whole log.
    search_fields = ["=aggregate_id", "=type"]


@admin.register(OutboxMessage)
class OutboxMessageAdmin(LargeTableAdminMixin, ReadOnlyAdmin):
    list_display = ["id", "event", "published_at", "attempts", "created_at"]
    list_filter = [("published_at", admin.EmptyFieldListFilter)]
    list_select_related = ["event"]
    raw_id_fields = ["event"]


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(LargeTableAdminMixin, ReadOnlyAdmin):
    list_display = ["id", "consumer", "event", "processed_at"]
    list_filter = [distinct_values_filter("consumer")]
    list_select_related = ["event"]
    search_fields = ["=event__id"]


# --- Outbound clinic webhooks ---------------------------------------------------------------------


class ClinicWebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")

    class Meta:
        model = ClinicWebhookEndpoint
        fields = ["clinic", "url", "is_active"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        refusal = webhook_target_refusal(url)
        if refusal:
            raise forms.ValidationError(f"This webhook URL cannot be used: {refusal}.")
        return url


@admin.register(ClinicWebhookEndpoint)
class ClinicWebhookEndpointAdmin(ClinicScopedAdminMixin, admin.ModelAdmin):
    form = ClinicWebhookEndpointForm
    list_display = ["id", "clinic", "url", "is_active", "rotated_at", "previous_secret_expires_at"]
    list_filter = ["is_active"]
    list_select_related = ["clinic"]
    raw_id_fields = ["clinic"]
    search_fields = ["clinic__name", "url"]
    # Secrets are issued by the rotate action, never typed in (or shown in lists).
    exclude = ["secret", "previous_secret"]
    readonly_fields = ["created_at", "rotated_at", "previous_secret_expires_at"]
    actions = ["rotate_secret"]

    def save_model(self, request: HttpRequest, obj: ClinicWebhookEndpoint, form: Any, change: bool) -> None:
        if not change:
            obj.secret = webhooks.secrets.token_urlsafe(32)
        super().save_model(request, obj, form, change)

    @admin.action(
        description="Rotate the signing secret (the old one stays valid for the grace period)",
        permissions=["change"],
    )
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[ClinicWebhookEndpoint]) -> None:
        for endpoint in queryset:
            secret = webhooks.webhook_endpoint_rotate_secret(endpoint_id=endpoint.pk)
            # Shown once, to the staff member who must hand it to the clinic.
            self.message_user(request, f"New secret for {endpoint.clinic}: {secret}", messages.SUCCESS)


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    readonly_fields = ["attempted_at", "status_code", "duration_ms", "error"]

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(LargeTableAdminMixin, ClinicScopedAdminMixin, admin.ModelAdmin):
    clinic_path = "endpoint__clinic"
    list_display = [
        "id",
        "endpoint",
        "aggregate_id",
        "sequence",
        "status",
        "attempts",
        "last_error",
        "created_at",
    ]
    list_filter = ["status"]
    list_select_related = ["endpoint__clinic"]
    raw_id_fields = ["endpoint", "event"]
    search_fields = ["=aggregate_id", "=event__id"]
    readonly_fields = [field.name for field in WebhookDelivery._meta.fields]
    inlines = [WebhookAttemptInline]
    actions = ["resend"]

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    # Operators resend from here; support resends one clinic's webhook from the patient page.
    @admin.action(
        description="Resend: deliver again, with a fresh 24-hour retry window", permissions=["change"]
    )
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        resent = sum(
            webhooks.webhook_delivery_resend(delivery_id=delivery.pk, actor=f"user:{request.user.pk}")
            for delivery in queryset
        )
        self.message_user(request, f"Resending {resent} delivery(ies).", messages.SUCCESS)
        if skipped := queryset.count() - resent:
            self.message_user(request, f"{skipped} were still pending and were left alone.", messages.WARNING)
