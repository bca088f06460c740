from __future__ import annotations

from django.db import models


class BareRecord(models.Model):
    """Seven fields, as many as a small intake row."""

    reference = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    code = models.CharField(max_length=32)
    quantity = models.DecimalField(max_digits=10, decimal_places=2)
    days = models.PositiveIntegerField()
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.reference
