"""API authentication: OAuth2 client-credentials tokens, each tied to one clinic."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.db.models import Model
from django.utils import timezone
from oauth2_provider.contrib.rest_framework import OAuth2Authentication, TokenHasResourceScope
from oauth2_provider.models import AccessToken, Application
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request as OAuthRequest
from rest_framework.exceptions import Throttled
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from accounts.budgets import address_of, budget_spent
from accounts.tenancy import tenant_scope_enter
from common import rows
from patients.models import Clinic, ClinicClient

LAST_USED_RESOLUTION = timedelta(minutes=1)

# The token, its application, the application's clinic link and clinic, and its user (none for
# client credentials): one statement, written by hand because every API request runs it.
_TOKEN_MODELS: tuple[type[Model], ...] = (AccessToken, Application, ClinicClient, Clinic, get_user_model())
_TOKEN_SQL = (
    "SELECT "
    + ", ".join(rows.columns_sql(model, f"t{index}") for index, model in enumerate(_TOKEN_MODELS))
    + f' FROM "{AccessToken._meta.db_table}" AS t0'
    f' LEFT JOIN "{Application._meta.db_table}" AS t1 ON t1.id = t0.application_id'
    f' LEFT JOIN "{ClinicClient._meta.db_table}" AS t2 ON t2.application_id = t1.id'
    f' LEFT JOIN "{Clinic._meta.db_table}" AS t3 ON t3.id = t2.clinic_id'
    f' LEFT JOIN "{get_user_model()._meta.db_table}" AS t4 ON t4.id = t0.user_id'
    " WHERE t0.token_checksum = %(checksum)s"
)


@dataclass(frozen=True)
class ClinicPrincipal:
    """The authenticated caller: a machine client acting for one clinic."""

    clinic: Clinic
    client_id: str
    is_authenticated: bool = True
    is_anonymous: bool = False


class ClinicOAuth2Authentication(OAuth2Authentication):
    def authenticate(self, request: Request) -> tuple[ClinicPrincipal, Any] | None:
        """An address that presented too many tokens that are not valid is refused (429) until
        its window ends, whatever it presents: guessing tokens gets nowhere fast."""
        presented = request.META.get("HTTP_AUTHORIZATION", "").lower().startswith("bearer ")
        address = address_of(request)
        if presented and (wait := budget_spent(scope="invalid_token", ident=address, record=False)):
            raise Throttled(wait=wait)
        result = self._clinic_authenticate(request)
        if presented and result is None:
            budget_spent(scope="invalid_token", ident=address, record=True)
        return result

    def _clinic_authenticate(self, request: Request) -> tuple[ClinicPrincipal, Any] | None:
        result = self._bearer_authenticate(request)
        if result is None:
            return None
        _user, token = result
        principal = clinic_principal_enter(token=token)
        if principal is None:
            request.oauth2_error = {"error": "invalid_token"}  # type: ignore[attr-defined]  # read by django-oauth-toolkit
            return None
        return principal, token

    def _bearer_authenticate(self, request: Request) -> tuple[Any, Any] | None:
        """django-oauth-toolkit's authentication for the usual case, a well-formed bearer token in
        the Authorization header: the same validator call its oauthlib endpoint makes
        (validate_bearer_token: known, unexpired, unrevoked, for this resource, of a usable
        application), without first copying the whole HTTP request into oauthlib's. Anything
        else (no header, another scheme, a token in the query string) takes the toolkit's path."""
        parts = request.META.get("HTTP_AUTHORIZATION", "").split()
        if len(parts) != 2 or parts[0].lower() != "bearer" or "access_token" in request.GET:
            return cast(tuple[Any, Any] | None, super().authenticate(request))
        oauth_request = OAuthRequest(request.build_absolute_uri(), http_method=request.method or "GET")
        if oauth2_settings.OAUTH2_VALIDATOR_CLASS().validate_bearer_token(parts[1], [], oauth_request):
            return oauth_request.user, oauth_request.access_token
        request.oauth2_error = getattr(oauth_request, "oauth2_error", {})  # type: ignore[attr-defined]  # read by django-oauth-toolkit
        return None


def clinic_principal_enter(*, token: Any) -> ClinicPrincipal | None:
    """The clinic a validated access token acts for, with the current transaction narrowed to
    it (accounts.tenancy); None when the token's application serves no clinic, or no longer
    does, so it reaches nothing. Shared by the clinic API and the MCP server (agents)."""
    link = _clinic_client_of(token)
    if link is None or link.revoked_at is not None:
        return None
    if not set(token.scope.split()) <= set(link.allowed_scopes):
        # Issued before the client's scopes were narrowed: it stops working at once.
        return None
    principal = ClinicPrincipal(clinic=link.clinic, client_id=token.application.client_id)
    # From here on the database itself shows this clinic's rows only (accounts.tenancy).
    tenant_scope_enter(clinic_id=link.clinic_id)
    now = timezone.now()
    if link.last_used_at is None or now - link.last_used_at > LAST_USED_RESOLUTION:
        ClinicClient.objects.filter(pk=link.pk).update(last_used_at=now)
    return principal


def _clinic_client_of(token: Any) -> ClinicClient | None:
    # ClinicOAuth2Validator loads it with the token (one query per request); read fresh otherwise.
    application = token.application
    if type(application).clinic_client.is_cached(application):
        return getattr(application, "clinic_client", None)
    return ClinicClient.objects.select_related("clinic").filter(application_id=token.application_id).first()


class BearerRefused(Exception):
    """A bearer token presented outside DRF was refused; the message says why, in words that
    are safe to show the caller (they never say whether a token exists)."""


def bearer_token_validate(*, token: str, scopes: list[str], uri: str) -> Any:
    """django-oauth-toolkit's own check of a bearer token (known, unexpired, unrevoked, for a
    usable application), for callers that are not DRF views: the MCP server. Returns the
    AccessToken; raises BearerRefused when it is not valid or lacks one of `scopes`."""
    validator = oauth2_settings.OAUTH2_VALIDATOR_CLASS()
    request = OAuthRequest(uri)
    if not token or not validator.validate_bearer_token(token, [], request):
        raise BearerRefused("The access token is not valid (unknown, expired or revoked).")
    access_token = request.access_token
    missing = [scope for scope in scopes if not access_token.allow_scopes([scope])]
    if missing:
        raise BearerRefused(f"The access token lacks the scope {' '.join(missing)}.")
    return access_token


class IsClinicClient(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, ClinicPrincipal)


class HasResourceScope(TokenHasResourceScope):
    """`required_scopes = ["prescriptions"]` needs prescriptions:read for reads, :write else."""


def principal_of(request: Request) -> ClinicPrincipal:
    # DRF types request.user as a Django user; IsClinicClient has already refused any caller
    # that ClinicOAuth2Authentication did not turn into a principal.
    return cast(ClinicPrincipal, request.user)


def clinic_of(request: Request) -> Clinic:
    return principal_of(request).clinic


class ClinicOAuth2Validator(OAuth2Validator):
    """Issues tokens only to clients that serve a clinic and are not revoked."""

    def _load_access_token(self, token: str) -> AccessToken | None:
        """django-oauth-toolkit's lookup (by the token's SHA-256), with the application's clinic
        link and clinic joined in: every API request reads them, in this one query, fresh."""
        checksum = hashlib.sha256(token.encode("utf-8")).hexdigest()
        with rows.planned_cursor() as cursor:
            cursor.execute(_TOKEN_SQL, {"checksum": checksum})
            row = cursor.fetchone()
        if row is None:
            return None
        parts, start = [], 0
        for model in _TOKEN_MODELS:
            parts.append(rows.instance_from_columns(model, row[start : start + rows.column_count(model)]))
            start += rows.column_count(model)
        access_token = cast(AccessToken, parts[0])  # its primary key matched the WHERE
        application = cast(Application | None, parts[1])
        clinic_client = cast(ClinicClient | None, parts[2])
        clinic, user = parts[3], parts[4]
        # What select_related("application__clinic_client__clinic", "user") would have cached.
        access_token.application = application
        access_token.user = cast(Any, user)
        if application is not None:
            Application.clinic_client.related.set_cached_value(application, clinic_client)
        if clinic_client is not None:
            clinic_client.application = application
            clinic_client.clinic = cast(Clinic, clinic)
        return access_token

    def authenticate_client(self, request: Any, *args: Any, **kwargs: Any) -> bool:
        if not super().authenticate_client(request, *args, **kwargs):
            return False
        return ClinicClient.objects.filter(application=request.client, revoked_at__isnull=True).exists()

    def _allowed_scopes(self, client: Any) -> set[str]:
        allowed = ClinicClient.objects.filter(application=client).values_list("allowed_scopes", flat=True)
        return set(allowed.first() or [])

    def validate_scopes(
        self, client_id: str, scopes: list[str], client: Any, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        """A client is issued only scopes it is allowed (a read-only integration stays one)."""
        if not super().validate_scopes(client_id, scopes, client, request, *args, **kwargs):
            return False
        return set(scopes) <= self._allowed_scopes(client)

    def get_default_scopes(self, client_id: str, request: Any, *args: Any, **kwargs: Any) -> list[str]:
        """Asked for no scope, a client gets the defaults it is allowed."""
        allowed = self._allowed_scopes(request.client)
        return [
            scope
            for scope in super().get_default_scopes(client_id, request, *args, **kwargs)
            if scope in allowed
        ]
