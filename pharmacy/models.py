import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from patients.phi import PhiCharField
from prescriptions.models import Prescription


class Partner(models.Model):
    """A pharmacy or fulfilment centre orders are routed to (pharmacy.routing).

    Where it may dispense (countries, and in the US the states it is licensed in), what it
    handles (controlled-drug schedules as "GB:2" or "US:II", cold chain, therapy areas; no
    therapy areas: every one), what it charges (a price per product code, else its per-item
    fee), how many orders it takes in flight, and the adapter that speaks its contract. Its
    API key and webhook secret are never stored here: they come from the environment by its
    code (settings.PARTNER_SECRETS).
    """

    class Adapter(models.TextChoices):
        FHIR_GATEWAY = "fhir_gateway", "FHIR R4 message gateway"
        MAILORDER = "mailorder", "US mail-order JSON API"

    class StatusBy(models.TextChoices):
        WEBHOOK = "webhook", "Signed webhooks"
        POLLING = "polling", "Polling its order status"

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=120)
    is_active = models.BooleanField(default=True)
    adapter = models.CharField(max_length=20, choices=Adapter.choices, default=Adapter.FHIR_GATEWAY)
    base_url = models.URLField(
        blank=True, help_text="Blank: from the environment (PARTNER_SECRETS, or GATEWAY_URL for the default)."
    )
    stock_csv_url = models.URLField(blank=True, help_text="Pulled periodically; blank: no CSV feed.")
    status_by = models.CharField(max_length=10, choices=StatusBy.choices, default=StatusBy.WEBHOOK)
    countries = ArrayField(models.CharField(max_length=2), default=list, help_text="e.g. GB, US.")
    us_states = ArrayField(models.CharField(max_length=2), default=list, blank=True, help_text="e.g. NY, NJ.")
    controlled_schedules = ArrayField(
        models.CharField(max_length=10), default=list, blank=True, help_text='e.g. "GB:2", "US:II".'
    )
    cold_chain = models.BooleanField(default=False, help_text="Handles refrigerated items.")
    therapy_areas = ArrayField(
        models.CharField(max_length=60), default=list, blank=True, help_text="Therapeutic classes; none: all."
    )
    fee_per_item_minor = models.PositiveIntegerField(default=0, help_text="Per item, in minor units.")
    price_list = models.JSONField(
        default=dict, blank=True, help_text="Product code to price per item, in minor units."
    )
    capacity = models.PositiveIntegerField(default=1000, help_text="Orders in flight at once.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(condition=models.Q(capacity__gt=0), name="partner_capacity_positive")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class PartnerStock(models.Model):
    """A partner's stock level of one product, from its stock feed (signed webhook or CSV pull).
    Older than PARTNER_STOCK_MAX_AGE_SECONDS it counts as unknown."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="stock")
    product_code = models.CharField(max_length=40)
    quantity = models.IntegerField()
    source = models.CharField(max_length=10, help_text="webhook or csv")
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["partner", "product_code"], name="partner_stock_one_per_product")
        ]

    def __str__(self) -> str:
        return f"{self.partner.code} {self.product_code}: {self.quantity}"


class StockFeedEvent(models.Model):
    """Each stock webhook, stored once by (partner, event id): a redelivery is a no-op."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="stock_events")
    event_id = models.CharField(max_length=80)
    received_at = models.DateTimeField(auto_now_add=True)
    items = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["partner", "event_id"], name="stock_feed_event_once"),
        ]

    def __str__(self) -> str:
        return f"stock feed {self.event_id} from {self.partner_id}"


class Dispatch(models.Model):
    """Sending one prescription to the pharmacy gateway: at most one per prescription.

    `idempotency_key` is fixed when the row is created and sent with every attempt, so the
    gateway creates at most one order however often the send is retried or replayed.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        DEAD_LETTERED = "dead_lettered", "Dead-lettered"
        FAILED = "failed", "Failed (terminal)"
        # No eligible partner (or every one tried): waits in the staff queue, routed again when
        # stock or partners change.
        AWAITING_PARTNER = "awaiting_partner", "Waiting: no eligible partner"

    prescription = models.OneToOneField(Prescription, on_delete=models.PROTECT, related_name="dispatch")
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    gateway_order_id = models.CharField(max_length=80, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    # When we last asked the gateway where the order is (orders_poll_stale).
    status_checked_at = models.DateTimeField(null=True, blank=True)
    # Transient failures are retried until GATEWAY_RETRY_WINDOW_SECONDS after this (creation,
    # or an operator's replay).
    window_started_at = models.DateTimeField(default=timezone.now)
    # The partner routing chose (pharmacy.routing); null until routed, or while waiting.
    partner = models.ForeignKey(
        Partner, null=True, blank=True, on_delete=models.PROTECT, related_name="dispatches"
    )
    # Partners that refused the order, in order: [{"partner": code, "reason": ...}]. Each is
    # tried at most once per prescription.
    partners_tried = models.JSONField(default=list, blank=True)
    # The latest routing decision: the partner chosen (or none) and why each other was passed over.
    routing = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name_plural = "dispatches"
        indexes = [models.Index(fields=["status", "id"])]

    def __str__(self) -> str:
        return f"Dispatch of {self.prescription}"


class DeadLetter(models.Model):
    """A dispatch that ran out of attempts, for an operator to replay or cancel."""

    dispatch = models.ForeignKey(Dispatch, on_delete=models.PROTECT, related_name="dead_letters")
    error = models.TextField()
    attempts = models.PositiveIntegerField()
    payload = models.JSONField(default=dict, help_text="What was being sent, without PHI.")
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=20, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Dead letter #{self.pk} ({self.dispatch})"


class GatewayWebhookEvent(models.Model):
    """Each gateway webhook event, stored once by its id: a redelivery is a no-op."""

    event_id = models.CharField(max_length=80, unique=True)
    type = models.CharField(max_length=40)
    order_id = models.CharField(max_length=80, db_index=True)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    applied = models.BooleanField(default=False, help_text="False when it changed nothing.")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["type"], name="gateway_webhook_event_type")]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class GatewayCancellation(models.Model):
    """Compensation for a prescription cancelled after the gateway acknowledged its order.

    At most one per dispatch. The send is retried on transient errors with the same
    idempotency key; the gateway refuses (409) once the order is dispensed.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        CANCELLED = "cancelled", "Cancelled at the gateway"
        REFUSED = "refused", "Refused: already dispensed"
        FAILED = "failed", "Failed (staff must act)"

    dispatch = models.OneToOneField(Dispatch, on_delete=models.PROTECT, related_name="cancellation")
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    reason = PhiCharField(max_length=500)
    requested_by = models.CharField(max_length=120, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"cancellation of dispatch {self.dispatch_id}"


class OrderAlert(models.Model):
    """An order the gateway has gone quiet about, raised to the operators: no progress after we
    asked (or we could not ask) for longer than ORDER_ESCALATE_AFTER_SECONDS, or an answer we
    cannot apply. At most one open alert per dispatch; an operator resolves it."""

    dispatch = models.ForeignKey(Dispatch, on_delete=models.PROTECT, related_name="alerts")
    reason = models.CharField(max_length=300)
    gateway_status = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["dispatch"],
                condition=models.Q(resolved_at__isnull=True),
                name="order_alert_one_open_per_dispatch",
            ),
        ]

    def __str__(self) -> str:
        return f"Order alert #{self.pk} ({self.dispatch})"


class PartnerCircuit(models.Model):
    """A circuit breaker per partner: after GATEWAY_CIRCUIT_FAILURES transient failures in a row
    the partner is left alone until `open_until` (a longer pause each time it opens again), so
    an outage delays work without spending its retry window or hammering the partner; the
    first success closes it."""

    partner = models.CharField(max_length=40, unique=True)
    failures = models.PositiveIntegerField(default=0)
    times_opened = models.PositiveIntegerField(default=0)
    open_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"circuit of {self.partner}"
