from django.conf import settings
from django.db import models


class StaffProfile(models.Model):
    """What the back office needs to know about a staff member beyond their login.

    `professional_registration` is the regulator's number (e.g. "GPhC 2087654"); only a
    pharmacist with one recorded may decide on a prescription (support.services).
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_profile"
    )
    professional_registration = models.CharField(
        max_length=40, blank=True, help_text='Regulator and number, e.g. "GPhC 2087654".'
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Staff profile of {self.user}"
