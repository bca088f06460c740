"""The MCP server (official `mcp` SDK, MCPServer): read-only tools for a clinic's agents.

Authentication and tenancy follow the clinic API's path exactly. The caller presents a bearer
token from our /oauth/token/ (for stdio, given once when the server starts; over HTTP, in the
Authorization header of every request). Every tool call then runs, in one thread for database
work, as one unit of work like an API request (accounts.tenancy.tenant_work): it checks the
token with django-oauth-toolkit's validator on the system connection, resolves the clinic its
client serves and opens the call's one transaction on the API role's connection, narrowed to
that clinic with row-level security (accounts.authentication.clinic_principal_enter); the read
and its patient-access log rows happen inside it. A token that expires or a client that is revoked mid-session stops working
at the next call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from typing import Annotated, Any, TypeVar

import structlog
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import AnyHttpUrl, Field
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accounts.authentication import (
    BearerRefused,
    ClinicPrincipal,
    bearer_token_validate,
    clinic_principal_enter,
)
from accounts.budgets import budget_spent
from accounts.tenancy import tenant_work
from agents import reads, schemas
from common.errors import DomainError
from prescriptions.models import Status

T = TypeVar("T")

MCP_PATH = "/mcp"
PRESCRIPTIONS_READ = ["prescriptions:read"]
PATIENTS_READ = ["patients:read", "prescriptions:read"]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)

INSTRUCTIONS = """\
Scriptline: e-prescriptions from this clinic to the pharmacy. Read-only tools, scoped to the
clinic whose token you hold. Use formulary_search to find medicines, prescriptions_list to find
prescriptions (by status, patient id or issue dates), prescription_get for one prescription's
status, items, safety-check findings and parcel tracking, and patient_timeline for everything
that happened to one patient's prescriptions. Ids that are not this clinic's are reported as
not found. Patients are identified by id only; no names or other identifiers are returned."""


def clinic_principal_for_token(*, token: str, scopes: list[str]) -> ClinicPrincipal:
    """Check a token and resolve its clinic, in a transaction of its own (nothing is read)."""
    return clinic_scoped_read(
        token=token, scopes=scopes, read=_principal_of, arguments={}, remote_addr=None, request_id=""
    )


def clinic_scoped_read(
    *,
    token: str,
    scopes: list[str],
    read: Callable[..., T],
    arguments: Mapping[str, Any],
    remote_addr: str | None,
    request_id: str,
) -> T:
    """Token check, clinic scope (row-level security) and the read, as one unit of work like
    an API request (accounts.tenancy.tenant_work): the token is checked on the system connection,
    the read runs in one transaction on the API role's connection."""
    with structlog.contextvars.bound_contextvars(request_id=request_id), tenant_work():
        access_token = bearer_token_validate(token=token, scopes=scopes, uri=_resource_url())
        principal = clinic_principal_enter(token=access_token)
        if principal is None:
            raise BearerRefused("The access token is not valid (unknown, expired or revoked).")
        caller = reads.Caller(principal=principal, remote_addr=remote_addr, request_id=request_id)
        return read(caller=caller, **arguments)


def clinic_call(**arguments: Any) -> Any:
    """clinic_scoped_read as a unit of work of its own, like a request: a broken or expired
    database connection is replaced before, and released after."""
    close_old_connections()
    try:
        return clinic_scoped_read(**arguments)
    finally:
        close_old_connections()


def _principal_of(*, caller: reads.Caller) -> ClinicPrincipal:
    return caller.principal


class ClinicTokenVerifier:
    """The SDK's TokenVerifier over our tokens: the HTTP transport refuses (401) a request whose
    bearer token is not a live token of a clinic's client before any tool runs."""

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            principal = await sync_to_async(_verify)(token)
        except BearerRefused:
            return None
        return AccessToken(token=token, client_id=principal.client_id, scopes=[])


def _verify(token: str) -> ClinicPrincipal:
    principal: ClinicPrincipal = clinic_call(
        token=token, scopes=[], read=_principal_of, arguments={}, remote_addr=None, request_id=""
    )
    return principal


def mcp_server_build(*, stdio_token: str | None = None) -> MCPServer[Any]:
    """The server with its four tools. With `stdio_token`, every call uses that token (stdio);
    without, each call uses its own request's Authorization header (streamable HTTP)."""
    http = stdio_token is None
    server: MCPServer[Any] = MCPServer(
        "scriptline",
        title="Scriptline",
        instructions=INSTRUCTIONS,
        version="1",
        token_verifier=ClinicTokenVerifier() if http else None,
        auth=(
            AuthSettings(issuer_url=AnyHttpUrl(settings.PUBLIC_BASE_URL), resource_server_url=None)
            if http
            else None
        ),
        log_level="WARNING",
    )

    async def run(ctx: Context, scopes: list[str], read: Callable[..., T], **arguments: Any) -> T:
        token = stdio_token if stdio_token is not None else _bearer(ctx.headers)
        request = getattr(ctx.request_context, "request", None)
        client = getattr(request, "client", None)
        try:
            result: T = await sync_to_async(clinic_call)(
                token=token,
                scopes=scopes,
                read=read,
                arguments=arguments,
                remote_addr=getattr(client, "host", None),
                request_id=f"mcp-{ctx.request_id}"[:64],
            )
            return result
        except BearerRefused as refusal:
            raise ToolError(str(refusal)) from None
        except DomainError as error:
            raise ToolError(error.detail) from None

    @server.tool(annotations=READ_ONLY)
    async def formulary_search(
        ctx: Context,
        search: Annotated[
            str, Field(max_length=100, description="Part of a name, an exact code or an ingredient.")
        ] = "",
        page: Annotated[int, Field(ge=1, le=10_000)] = 1,
        page_size: Annotated[int, Field(ge=1, le=100)] = 20,
    ) -> schemas.FormularyPage:
        """Search the formulary: the medicines a prescription may name."""
        return await run(
            ctx, [], reads.formulary_search, search=search.strip(), page=page, page_size=page_size
        )

    @server.tool(annotations=READ_ONLY)
    async def prescription_get(
        ctx: Context, prescription_id: Annotated[int, Field(ge=1, description="The prescription's id.")]
    ) -> schemas.PrescriptionDetail:
        """One prescription: its status in plain words, items, the safety checks' findings and,
        once shipped, the parcel's tracking."""
        return await run(ctx, PRESCRIPTIONS_READ, reads.prescription_get, prescription_id=prescription_id)

    @server.tool(annotations=READ_ONLY)
    async def prescriptions_list(
        ctx: Context,
        status: Annotated[Status | None, Field(description="Only prescriptions in this status.")] = None,
        patient_id: Annotated[int | None, Field(ge=1, description="Only this patient's.")] = None,
        issued_from: Annotated[date | None, Field(description="Issued on or after this date.")] = None,
        issued_to: Annotated[date | None, Field(description="Issued on or before this date.")] = None,
        page: Annotated[int, Field(ge=1, le=10_000)] = 1,
        page_size: Annotated[int, Field(ge=1, le=100)] = 20,
    ) -> schemas.PrescriptionPage:
        """The clinic's prescriptions, newest first, filtered and a page at a time."""
        return await run(
            ctx,
            PRESCRIPTIONS_READ,
            reads.prescriptions_list,
            status=status,
            patient_id=patient_id,
            issued_from=issued_from,
            issued_to=issued_to,
            page=page,
            page_size=page_size,
        )

    @server.tool(annotations=READ_ONLY)
    async def patient_timeline(
        ctx: Context, patient_id: Annotated[int, Field(ge=1, description="The patient's id.")]
    ) -> schemas.PatientTimeline:
        """Everything that happened to one patient's prescriptions, oldest first."""
        return await run(ctx, PATIENTS_READ, reads.patient_timeline, patient_id=patient_id)

    return server


class InvalidTokenBudget:
    """ASGI middleware: the clinic API's budget for tokens that are not valid, per address
    (accounts.budgets, INVALID_TOKEN_RATE_LIMIT). An address that presented too many is answered
    429 until its window ends, whatever it presents: guessing tokens gets nowhere fast."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _bearer(dict(Headers(scope=scope))):
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown",))[0]
        wait = await sync_to_async(budget_spent)(scope="invalid_token", ident=address, record=False)
        if wait:
            await JSONResponse(
                {"error": "too_many_requests"}, status_code=429, headers={"Retry-After": str(wait)}
            )(scope, receive, send)
            return
        refused = False

        async def watch(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 401:
                refused = True
            await send(message)

        await self.app(scope, receive, watch)
        if refused:
            await sync_to_async(budget_spent)(scope="invalid_token", ident=address, record=True)


def transport_security(host: str) -> TransportSecuritySettings | None:
    """On a loopback address the SDK guards against DNS rebinding itself; elsewhere only the
    Host names Django would serve are accepted."""
    if host in LOOPBACK_HOSTS:
        return None
    names = [name for name in settings.ALLOWED_HOSTS if name and name != "*" and not name.startswith(".")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*names, *(f"{name}:*" for name in names)],
        allowed_origins=[f"https://{name}" for name in names],
    )


def _bearer(headers: Mapping[str, str] | None) -> str:
    value = next((value for key, value in (headers or {}).items() if key.lower() == "authorization"), "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _resource_url() -> str:
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}{MCP_PATH}"
