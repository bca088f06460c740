from django.contrib.postgres.fields import ArrayField
from django.db import models

from patients.models import Clinic
from prescriptions.models import Prescription


class ReceivedOrder(models.Model):
    """A prescription that arrived as an NHS EPS prescription-order message, with the
    identifiers the clinic's system gave it: the message, the prescription (short and long
    form) and each item, in the message's order (item n is line n of the prescription).

    A prescription-order-update names the prescription by its short-form ID, and pollers
    search MedicationRequests by item number, so both are kept here.
    """

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="+")
    prescription = models.OneToOneField(Prescription, on_delete=models.PROTECT, related_name="received_order")
    message_id = models.CharField(max_length=100, help_text="Bundle.identifier of the order message.")
    short_form_id = models.CharField("prescription ID (short form)", max_length=40)
    long_form_id = models.CharField("prescription ID (long form)", max_length=100)
    item_numbers = ArrayField(models.CharField(max_length=100), default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["clinic", "short_form_id"], name="received_order_prescription_id_unique"
            ),
        ]
        indexes = [models.Index(fields=["clinic", "message_id"])]

    def __str__(self) -> str:
        return f"order {self.short_form_id} (prescription #{self.prescription_id})"
