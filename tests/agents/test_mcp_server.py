"""The MCP server, driven by the official SDK's own client: `manage.py run_mcp_server` spawned
over stdio, and `manage.py run_mcp_server --http PORT` started as a process and reached over
streamable HTTP. Data is committed (transactional tests) so the server process sees it."""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from django.conf import settings
from django.db import connection
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from accounts.database_roles import api_login_role
from audit.models import PatientAccess
from events.models import Event
from patients.models import ClinicClient
from prescriptions.models import Prescription
from tests.conftest import ClinicSetup, make_clinic_setup
from tests.patients.factories import AccessTokenFactory, PatientFactory
from tests.prescriptions.factories import checked, scenario
from tests.processes import ROOT, stop_process
from tests.processes import test_database_url as database_url

pytestmark = pytest.mark.django_db(transaction=True)

TOOLS = {"formulary_search", "prescription_get", "prescriptions_list", "patient_timeline"}
Session = Callable[[ClientSession], Awaitable[Any]]


def server_environment(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        **extra,
    }


def over_stdio(token: str, session_body: Session, errlog: Any = None) -> Any:
    parameters = StdioServerParameters(
        command=sys.executable,
        args=["manage.py", "run_mcp_server"],
        env=server_environment(SCRIPTLINE_MCP_TOKEN=token),
        cwd=str(ROOT),
    )

    async def main() -> Any:
        async with (
            stdio_client(parameters, errlog=errlog or sys.stderr) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await session_body(session)

    return anyio.run(main)


def over_http(url: str, token: str, session_body: Session) -> Any:
    async def main() -> Any:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await session_body(session)

    return anyio.run(main)


def spare_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def http_server_process(**environment: str) -> Iterator[str]:
    """`manage.py run_mcp_server --http PORT` on a spare port; yields the /mcp URL."""
    port = spare_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - read on failure, closed below
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_mcp_server", "--http", str(port)],
        cwd=ROOT,
        env=server_environment(**environment),
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        stop_process(process)
        log.seek(0)
        raise RuntimeError(f"the MCP server did not start: {log.read().decode()[-2000:]}")
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop_process(process)
        log.close()


@pytest.fixture(scope="module")
def http_server(django_db_setup, django_db_blocker) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with django_db_blocker.unblock(), http_server_process() as url:
        yield url


@pytest.fixture
def clinics(formulary) -> tuple[ClinicSetup, ClinicSetup]:  # type: ignore[no-untyped-def]
    return make_clinic_setup("Clinic A"), make_clinic_setup("Clinic B")


def prescription_for(setup: ClinicSetup, **fields: Any) -> Prescription:
    patient = PatientFactory(clinic=setup.clinic)
    return scenario(clinic=setup.clinic, patient_object=patient, prescriber_object=setup.prescriber, **fields)


def mcp_rows() -> list[tuple[int, int, str, str, str]]:
    return list(
        PatientAccess.objects.filter(channel="mcp")
        .order_by("id")
        .values_list("patient_id", "clinic_id", "action", "client_id", "request_id")
    )


def error_text(result: Any) -> str:
    """A tool error's message, after the SDK's "Error executing tool <name>: " prefix."""
    assert result.is_error is True
    assert result.structured_content is None
    prefix, _, message = result.content[0].text.partition(": ")
    assert prefix.startswith("Error executing tool ")
    return message


def assert_tool_schemas(tools: list[Any]) -> None:
    by_name = {tool.name: tool for tool in tools}
    assert set(by_name) == TOOLS
    for tool in by_name.values():
        assert tool.annotations.read_only_hint is True
        assert tool.output_schema is not None
        assert tool.output_schema["type"] == "object"
        assert "ctx" not in tool.input_schema["properties"]
    get_schema = by_name["prescription_get"].input_schema
    assert get_schema["required"] == ["prescription_id"]
    assert get_schema["properties"]["prescription_id"]["minimum"] == 1
    assert {"status", "items", "findings", "tracking"} <= set(
        by_name["prescription_get"].output_schema["properties"]
    )
    list_schema = by_name["prescriptions_list"].input_schema["properties"]
    assert {"status", "patient_id", "issued_from", "issued_to", "page", "page_size"} <= set(list_schema)
    assert "next_page" in by_name["prescriptions_list"].output_schema["properties"]
    assert "patient_id" in by_name["patient_timeline"].input_schema["required"]


# --- stdio ------------------------------------------------------------------------------------


def test_stdio_lists_the_tools_reads_own_prescription_and_refuses_another_clinics_id_as_not_found(clinics):  # type: ignore[no-untyped-def]
    clinic_a, clinic_b = clinics
    held = prescription_for(clinic_a, code="324907005")  # methylphenidate: a controlled drug
    checked(held)
    held.refresh_from_db()
    foreign = prescription_for(clinic_b)
    missing_id = foreign.pk + 1000
    client_id = clinic_a.clinic.clients.get().application.client_id

    async def body(session: ClientSession) -> Any:
        tools = (await session.list_tools()).tools
        own = await session.call_tool("prescription_get", {"prescription_id": held.pk})
        other = await session.call_tool("prescription_get", {"prescription_id": foreign.pk})
        absent = await session.call_tool("prescription_get", {"prescription_id": missing_id})
        timeline = await session.call_tool("patient_timeline", {"patient_id": foreign.patient_id})
        return tools, own, other, absent, timeline

    tools, own, other, absent, foreign_timeline = over_stdio(clinic_a.token, body)

    assert_tool_schemas(tools)
    assert own.is_error is False
    detail = own.structured_content
    assert detail["id"] == held.pk
    assert detail["status"] == held.status == "awaiting_pharmacist"
    assert detail["status_text"].startswith("With the pharmacist since")
    assert detail["items"][0]["code"] == "324907005"
    findings = detail["findings"]
    assert len(findings) == len(held.check_results) > 0
    assert {finding["message"] for finding in findings} == {
        result["message"] for result in held.check_results
    }
    assert any(
        finding["severity"] == "needs_pharmacist"
        and finding["meaning"] == "Held for a pharmacist to review before it goes ahead."
        for finding in findings
    )
    assert detail["tracking"] is None
    assert "given_name" not in str(detail)
    assert held.patient.family_name not in str(detail)

    assert error_text(other) == f"No prescription with id {foreign.pk}."
    assert error_text(absent) == f"No prescription with id {missing_id}."
    assert error_text(other).replace(str(foreign.pk), "N") == error_text(absent).replace(str(missing_id), "N")
    assert other.structured_content is None
    assert error_text(foreign_timeline) == f"No patient with id {foreign.patient_id}."

    # One access row: the own prescription's patient; nothing for the refused ids.
    rows = mcp_rows()
    assert [(row[0], row[1], row[2], row[3]) for row in rows] == [
        (held.patient_id, clinic_a.clinic.pk, "detail", client_id)
    ]
    assert rows[0][4].startswith("mcp-")
    assert not PatientAccess.objects.filter(clinic=clinic_b.clinic).exists()


def test_stdio_refuses_to_start_with_a_bad_token(clinics, tmp_path: Path):  # type: ignore[no-untyped-def]
    errors = (tmp_path / "stderr.log").open("w+")

    async def body(session: ClientSession) -> Any:
        return await session.list_tools()

    with pytest.raises(Exception):  # noqa: B017,PT011 - the connection closes: any transport error
        over_stdio("not-a-real-token", body, errlog=errors)
    errors.seek(0)
    assert "Refused: The access token is not valid" in errors.read()
    assert mcp_rows() == []


def test_stdio_stops_answering_once_the_client_is_revoked(clinics):  # type: ignore[no-untyped-def]
    clinic_a, _ = clinics
    own = prescription_for(clinic_a)

    async def body(session: ClientSession) -> Any:
        before = await session.call_tool("prescription_get", {"prescription_id": own.pk})
        await anyio.to_thread.run_sync(
            lambda: ClinicClient.objects.filter(clinic=clinic_a.clinic).update(
                revoked_at=datetime.datetime.now(datetime.UTC)
            )
        )
        after = await session.call_tool("prescription_get", {"prescription_id": own.pk})
        return before, after

    before, after = over_stdio(clinic_a.token, body)

    assert before.is_error is False
    assert error_text(after) == "The access token is not valid (unknown, expired or revoked)."
    assert len(mcp_rows()) == 1


# --- streamable HTTP --------------------------------------------------------------------------


def test_http_refuses_a_request_without_a_valid_bearer_token(http_server, clinics):  # type: ignore[no-untyped-def]
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    for authorization in ({}, {"Authorization": "Bearer not-a-real-token"}):
        response = httpx2.post(http_server, json=initialize, headers={**headers, **authorization}, timeout=30)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')

    async def body(session: ClientSession) -> Any:
        return await session.list_tools()

    with pytest.raises(Exception):  # noqa: B017,PT011 - the SDK surfaces the 401 as an error
        over_http(http_server, "not-a-real-token", body)
    assert mcp_rows() == []


def test_http_lists_filters_and_pages_the_clinics_prescriptions(http_server, clinics):  # type: ignore[no-untyped-def]
    clinic_a, clinic_b = clinics
    first = prescription_for(clinic_a)
    second = prescription_for(clinic_a, issued_on=datetime.date.today() - datetime.timedelta(days=3))
    third = prescription_for(clinic_a)
    checked(third)
    prescription_for(clinic_b)
    received = Prescription.objects.filter(clinic=clinic_a.clinic, status="received").count()

    async def body(session: ClientSession) -> Any:
        tools = (await session.list_tools()).tools
        page_one = await session.call_tool("prescriptions_list", {"page_size": 2})
        page_two = await session.call_tool("prescriptions_list", {"page_size": 2, "page": 2})
        by_status = await session.call_tool("prescriptions_list", {"status": "received"})
        by_patient = await session.call_tool("prescriptions_list", {"patient_id": second.patient_id})
        by_date = await session.call_tool(
            "prescriptions_list", {"issued_to": str(datetime.date.today() - datetime.timedelta(days=1))}
        )
        bad_status = await session.call_tool("prescriptions_list", {"status": "lost"})
        backwards = await session.call_tool(
            "prescriptions_list", {"issued_from": "2026-02-01", "issued_to": "2026-01-01"}
        )
        return tools, page_one, page_two, by_status, by_patient, by_date, bad_status, backwards

    tools, page_one, page_two, by_status, by_patient, by_date, bad_status, backwards = over_http(
        http_server, clinic_a.token, body
    )

    assert_tool_schemas(tools)
    one, two = page_one.structured_content, page_two.structured_content
    assert [item["id"] for item in one["prescriptions"]] == [third.pk, second.pk]
    assert (one["total"], one["page"], one["next_page"]) == (3, 1, 2)
    assert [item["id"] for item in two["prescriptions"]] == [first.pk]
    assert two["next_page"] is None
    assert {item["id"] for item in by_status.structured_content["prescriptions"]} == set(
        Prescription.objects.filter(clinic=clinic_a.clinic, status="received").values_list("id", flat=True)
    )
    assert by_status.structured_content["total"] == received
    assert [item["id"] for item in by_patient.structured_content["prescriptions"]] == [second.pk]
    assert [item["id"] for item in by_date.structured_content["prescriptions"]] == [second.pk]
    assert bad_status.is_error is True
    assert "status" in bad_status.content[0].text
    assert error_text(backwards) == "issued_from must not be after issued_to."

    # One row per patient shown, per call that showed patients (the two pages, the filters).
    rows = mcp_rows()
    patients = {first.patient_id, second.patient_id, third.patient_id}
    assert {row[0] for row in rows} == patients
    assert {(row[1], row[2]) for row in rows} == {(clinic_a.clinic.pk, "list")}
    assert len(rows) == 2 + 1 + received + 1 + 1
    assert not PatientAccess.objects.filter(clinic=clinic_b.clinic).exists()
    assert set(PatientAccess.objects.filter(channel="mcp").values_list("remote_addr", flat=True)) == {
        "127.0.0.1"
    }
    # The server read (and logged) on a connection logged in as the API role, still open.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND datname = %s",
            [api_login_role()[0], connection.settings_dict["NAME"]],
        )
        assert cursor.fetchone()[0] >= 1


def test_http_patient_timeline_and_formulary_search_with_each_requests_own_token(http_server, clinics):  # type: ignore[no-untyped-def]
    clinic_a, clinic_b = clinics
    shipped = prescription_for(clinic_a)
    checked(shipped)
    Prescription.objects.filter(pk=shipped.pk).update(status="shipped", tracking_number="SIM123456")
    later = scenario(
        clinic=clinic_a.clinic, patient_object=shipped.patient, prescriber_object=clinic_a.prescriber
    )
    foreign = prescription_for(clinic_b)
    events_of_patient = Event.objects.filter(
        aggregate_type="prescription", aggregate_id__in=[shipped.pk, later.pk]
    ).count()

    async def clinic_a_body(session: ClientSession) -> Any:
        timeline = await session.call_tool("patient_timeline", {"patient_id": shipped.patient_id})
        detail = await session.call_tool("prescription_get", {"prescription_id": shipped.pk})
        formulary = await session.call_tool("formulary_search", {"search": "322236009"})
        return timeline, detail, formulary

    async def clinic_b_body(session: ClientSession) -> Any:
        return (
            await session.call_tool("patient_timeline", {"patient_id": shipped.patient_id}),
            await session.call_tool("patient_timeline", {"patient_id": foreign.patient_id}),
        )

    timeline, detail, formulary = over_http(http_server, clinic_a.token, clinic_a_body)
    refused, own_b = over_http(http_server, clinic_b.token, clinic_b_body)

    content = timeline.structured_content
    assert content["patient_id"] == shipped.patient_id
    assert [item["id"] for item in content["prescriptions"]] == [later.pk, shipped.pk]
    assert len(content["entries"]) == events_of_patient > 2
    assert [entry["at"] for entry in content["entries"]] == sorted(
        entry["at"] for entry in content["entries"]
    )
    assert content["entries"][0]["event"] == "prescription.received"
    assert content["truncated"] is False
    tracking = detail.structured_content["tracking"]
    assert tracking["number"] == "SIM123456"
    assert "SIM123456" in detail.structured_content["status_text"]
    found = formulary.structured_content
    assert [(medicine["code"], medicine["controlled"]) for medicine in found["medicines"]] == [
        ("322236009", False)
    ]
    assert (found["total"], found["next_page"]) == (1, None)

    assert error_text(refused) == f"No patient with id {shipped.patient_id}."
    assert own_b.structured_content["patient_id"] == foreign.patient_id

    rows = mcp_rows()
    assert [(row[0], row[1], row[2]) for row in rows] == [
        (shipped.patient_id, clinic_a.clinic.pk, "detail"),
        (shipped.patient_id, clinic_a.clinic.pk, "detail"),
        (foreign.patient_id, clinic_b.clinic.pk, "detail"),
    ]


def test_http_tool_needs_the_scope_its_data_needs(http_server, clinics):  # type: ignore[no-untyped-def]
    clinic_a, _ = clinics
    own = prescription_for(clinic_a)
    link = clinic_a.clinic.clients.get()
    narrow = AccessTokenFactory(application=link.application, scope="patients:read").token

    async def body(session: ClientSession) -> Any:
        return (
            await session.call_tool("prescription_get", {"prescription_id": own.pk}),
            await session.call_tool("formulary_search", {"search": "paracetamol"}),
        )

    refused, allowed = over_http(http_server, narrow, body)

    assert error_text(refused) == "The access token lacks the scope prescriptions:read."
    assert allowed.is_error is False
    assert mcp_rows() == []


def test_http_slows_an_address_that_presents_too_many_tokens_that_are_not_valid(clinics):  # type: ignore[no-untyped-def]
    clinic_a, _ = clinics
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

    with http_server_process(INVALID_TOKEN_RATE_LIMIT="2/minute") as url:
        statuses = [
            httpx2.post(
                url, json=initialize, headers={**headers, "Authorization": f"Bearer guess-{n}"}, timeout=30
            )
            for n in range(3)
        ]
        valid = httpx2.post(
            url, json=initialize, headers={**headers, "Authorization": f"Bearer {clinic_a.token}"}, timeout=30
        )

    assert [response.status_code for response in statuses] == [401, 401, 429]
    assert valid.status_code == 429
    assert 1 <= int(valid.headers["retry-after"]) <= 60
    assert mcp_rows() == []
