from django.conf import settings
from django.db import models

from patients.models import Clinic, Patient


class PatientAccess(models.Model):
    """One read of a patient's record: an admin page, an API list or detail response, or an
    agent's tool call on the MCP server.

    Append-only in the database (audit migration 0002): a trigger refuses UPDATE and DELETE.
    """

    class Channel(models.TextChoices):
        ADMIN = "admin", "Back office"
        API = "api", "Clinic API"
        MCP = "mcp", "MCP server (agents)"

    class Action(models.TextChoices):
        LIST = "list", "Listed"
        DETAIL = "detail", "Opened"

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="+")
    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="+")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    action = models.CharField(max_length=10, choices=Action.choices)
    staff_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    client_id = models.CharField("API client id", max_length=100, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    accessed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "patient record access"
        verbose_name_plural = "patient record access log"
        ordering = ["-id"]
        # The admin's clinic filter in its newest-first order, and its exact-match searches.
        indexes = [
            models.Index(fields=["patient", "-id"]),
            models.Index(fields=["clinic", "-id"], name="patient_access_clinic_newest"),
            models.Index(fields=["client_id"], name="patient_access_client_id"),
            models.Index(fields=["request_id"], name="patient_access_request_id"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(staff_user__isnull=False, client_id="")
                    | models.Q(staff_user__isnull=True) & ~models.Q(client_id="")
                ),
                name="patient_access_by_exactly_one_principal",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} patient #{self.patient_id} via {self.channel}"

    @property
    def who(self) -> str:
        return f"staff:{self.staff_user}" if self.staff_user_id else f"client:{self.client_id}"
