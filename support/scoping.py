"""Admin pages show a staff member only the clinics they work for (support.services.staff_clinics)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest

from common.auth import staff_user_of
from support.services import staff_clinics


class ClinicScopedAdminMixin:
    """Narrows an admin's queryset (lists, change pages, raw-id lookups) to the user's clinics.

    `clinic_path` is the lookup from the model to its clinic, e.g. "clinic" or
    "prescription__clinic".
    """

    clinic_path = "clinic"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)  # type: ignore[misc]  # a mixin: ModelAdmin follows it
        if request.user.is_superuser:
            return queryset
        return queryset.filter(**{f"{self.clinic_path}__in": staff_clinics(user=staff_user_of(request))})
