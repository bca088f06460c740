"""API authentication: OAuth2 client-credentials tokens, each tied to one clinic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oauth2_provider.contrib.rest_framework import OAuth2Authentication, TokenHasResourceScope
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from patients.models import Clinic, ClinicClient
from patients.tenancy import tenant_scope_enter


@dataclass(frozen=True)
class ClinicPrincipal:
    """The authenticated caller: a machine client acting for one clinic."""

    clinic: Clinic
    client_id: str
    is_authenticated: bool = True
    is_anonymous: bool = False


class ClinicOAuth2Authentication(OAuth2Authentication):
    def authenticate(self, request: Request) -> tuple[ClinicPrincipal, Any] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        _user, token = result
        link = (
            ClinicClient.objects.select_related("clinic").filter(application_id=token.application_id).first()
        )
        if link is None:
            # A valid token from an application that serves no clinic reaches nothing.
            request.oauth2_error = {"error": "invalid_token"}
            return None
        principal = ClinicPrincipal(clinic=link.clinic, client_id=token.application.client_id)
        # From here on the database itself shows this clinic's rows only (patients.tenancy).
        tenant_scope_enter(clinic_id=link.clinic_id)
        return principal, token


class IsClinicClient(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, ClinicPrincipal)


class HasResourceScope(TokenHasResourceScope):
    """`required_scopes = ["prescriptions"]` needs prescriptions:read for reads, :write else."""


def clinic_of(request: Request) -> Clinic:
    return request.user.clinic
