"""`manage.py run_mcp_server`: the MCP tools over stdio (a local agent starts it), or
`--http PORT`: over streamable HTTP at /mcp, each request with its own bearer token."""

from __future__ import annotations

import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from accounts.authentication import BearerRefused
from agents.server import MCP_PATH, clinic_principal_for_token, mcp_server_build, transport_security

TOKEN_VARIABLE = "SCRIPTLINE_MCP_TOKEN"


class Command(BaseCommand):
    help = (
        "Serve the read-only MCP tools: over stdio (the access token in $SCRIPTLINE_MCP_TOKEN or "
        "--token), or with --http PORT over streamable HTTP at /mcp (a bearer token per request)."
    )
    # stdout belongs to the MCP protocol in stdio mode: nothing else may be written there.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--http", type=int, metavar="PORT", help="Serve streamable HTTP on this port.")
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on with --http.")
        parser.add_argument(
            "--token",
            default="",
            help=f"stdio: the access token from /oauth/token/ (default: ${TOKEN_VARIABLE}; the "
            "environment keeps it out of the process list).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["http"] is not None:
            self._serve_http(host=options["host"], port=options["http"])
        else:
            self._serve_stdio(token=options["token"] or os.environ.get(TOKEN_VARIABLE, ""))

    def _serve_stdio(self, *, token: str) -> None:
        if not token:
            raise CommandError(f"No access token: set {TOKEN_VARIABLE} (or pass --token).")
        try:
            principal = clinic_principal_for_token(token=token, scopes=[])
        except BearerRefused as refusal:
            raise CommandError(f"Refused: {refusal}") from None
        connection.close()
        sys.stderr.write(f"MCP server on stdio for {principal.clinic.name} (client {principal.client_id})\n")
        mcp_server_build(stdio_token=token).run("stdio")

    def _serve_http(self, *, host: str, port: int) -> None:
        server = mcp_server_build()
        sys.stderr.write(f"MCP server listening on http://{host}:{port}{MCP_PATH}\n")
        server.run(
            "streamable-http",
            host=host,
            port=port,
            streamable_http_path=MCP_PATH,
            stateless_http=True,
            json_response=True,
            transport_security=transport_security(host),
        )
