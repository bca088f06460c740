"""`make demo`: the whole pipeline on this machine, with synthetic data.

Migrates, loads the formulary and demo data, starts gunicorn, a Celery worker, Celery beat,
the gateway simulator, the Stripe simulator (auto-confirming payments) and the MCP server (streamable
HTTP), posts sample prescriptions through the API with an OAuth2 token, checks the MCP server with
the SDK's client, prints where to look and how to connect an MCP client, and runs until Ctrl-C (or DEMO_SECONDS), stopping everything it started.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The FHIR order is written with the project's own EPS encoder: import it from the checkout.
sys.path.insert(0, str(ROOT))
PYTHON = sys.executable
WEB_PORT = int(os.environ.get("DEMO_PORT", "8000"))
GATEWAY_PORT = int(os.environ.get("GATEWAY_SIM_PORT", "8765"))
BASE_URL = f"http://127.0.0.1:{WEB_PORT}"
GATEWAY_URL = f"http://127.0.0.1:{GATEWAY_PORT}"
MAILORDER_PORT = int(os.environ.get("MAILORDER_SIM_PORT", "8766"))
MAILORDER_URL = f"http://127.0.0.1:{MAILORDER_PORT}"
STRIPE_PORT = int(os.environ.get("STRIPE_SIM_PORT", "12111"))
STRIPE_URL = f"http://127.0.0.1:{STRIPE_PORT}"
MCP_PORT = int(os.environ.get("MCP_PORT", "8001"))
MCP_URL = f"http://127.0.0.1:{MCP_PORT}/mcp"
LOG_DIR = ROOT / "var" / "log"
# Every queue (config/settings.py CELERY_QUEUES_ALL): the demo runs one worker for all of them.
QUEUES = "default,events,checks,payments,dispatch,webhooks,notifications"


def run(*arguments: str) -> None:
    subprocess.run([PYTHON, "manage.py", *arguments], cwd=ROOT, check=True)


def start(
    name: str, command: list[str], env: dict[str, str], log_dir: Path = LOG_DIR
) -> subprocess.Popen[bytes]:
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
    print(f"  starting {name:<10} (log: {os.path.relpath(log_dir / name, ROOT)}.log)")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)


def layout(
    *,
    web_port: int = WEB_PORT,
    gateway_port: int = GATEWAY_PORT,
    stripe_port: int = STRIPE_PORT,
    mcp_port: int | None = MCP_PORT,
    mailorder_port: int = MAILORDER_PORT,
    step_delay: float = 3,
    confirm_delay: float = 2,
    simulator_state: bool = True,
) -> list[tuple[str, list[str]]]:
    """The demo's processes, as (name, command): gunicorn with 2 workers, one Celery worker on
    every queue, beat, the MCP server (unless mcp_port is None), the two pharmacy partners' simulators
    (the FHIR gateway and the mail-order pharmacy, advancing each order every `step_delay` seconds)
    and the Stripe simulator (paying each
    PaymentIntent after `confirm_delay` seconds). `make bench-e2e` starts the same layout, with the
    simulators' state kept in memory (`simulator_state=False`): each simulator rewrites its whole
    state file after every change, a cost of the stand-in partners that is not Scriptline's."""
    state = [] if simulator_state else ["--state-file", ""]
    base_url = f"http://127.0.0.1:{web_port}"
    manage = [PYTHON, "manage.py"]
    processes = [
        (
            "web",
            [
                PYTHON,
                "-m",
                "gunicorn",
                "config.wsgi",
                "-b",
                f"127.0.0.1:{web_port}",
                "-w",
                "2",
                "--timeout",
                "30",
            ],
        ),
        (
            "worker",
            [PYTHON, "-m", "celery", "-A", "config", "worker", "-Q", QUEUES, "-c", "2", "-l", "INFO"],
        ),
        ("beat", [PYTHON, "-m", "celery", "-A", "config", "beat", "-l", "INFO"]),
    ]
    if mcp_port is not None:
        # The MCP server for agents, over streamable HTTP (each request brings its bearer token).
        processes.append(("mcp", [*manage, "run_mcp_server", "--http", str(mcp_port)]))
    processes += [
        (
            "gateway",
            [
                *manage,
                "run_gateway_simulator",
                "--port",
                str(gateway_port),
                "--webhook-url",
                f"{base_url}/webhooks/gateway/",
                "--step-delay",
                str(step_delay),
                *state,
            ],
        ),
        # The second pharmacy partner: a US mail-order pharmacy (JSON API, status by polling).
        (
            "mailorder",
            [
                *manage,
                "run_mailorder_simulator",
                "--port",
                str(mailorder_port),
                "--step-delay",
                str(step_delay),
                *state,
            ],
        ),
        # Stripe simulator: confirms each PaymentIntent with a test card after confirm_delay.
        (
            "stripe",
            [
                *manage,
                "run_stripe_simulator",
                "--port",
                str(stripe_port),
                "--webhook-url",
                f"{base_url}/webhooks/stripe/",
                "--auto-confirm",
                "--auto-confirm-delay",
                str(confirm_delay),
                *state,
            ],
        ),
    ]
    return processes


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group, SIGKILL what is still there after 15 seconds."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def wait_for(url: str, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:  # refused, reset or timed out while the server boots
            time.sleep(0.3)
    raise SystemExit(f"{what} did not come up at {url}; see var/log/")


def call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{BASE_URL}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def access_token(credentials: dict[str, str]) -> str:
    form = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": credentials["client_id"],
            "client_secret": credentials["client_secret"],
        }
    ).encode()
    with urllib.request.urlopen(f"{BASE_URL}/oauth/token/", data=form, timeout=10) as response:
        return json.loads(response.read())["access_token"]


FIRST_NAMES = ["Robin", "Jules", "Morgan", "Casey"]


def test_range_nhs_number() -> str:
    """A random NHS number in the 999 range reserved for testing, with a valid check digit."""
    while True:
        digits = [9, 9, 9, *(random.randrange(10) for _ in range(6))]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
        if check != 10:
            return "".join(map(str, digits)) + str(0 if check == 11 else check)


def register_patient(auth: dict[str, str], index: int) -> int:
    body = {
        "given_name": FIRST_NAMES[index % len(FIRST_NAMES)],
        "family_name": "Demopatient",
        "birth_date": f"{1985 + index}-0{index + 1}-1{index}",
        "sex": "unknown",
        "nhs_number": test_range_nhs_number(),
        "address_line": f"{index + 1} Example Street",
        "city": "Leeds",
        "postal_code": "LS1 1AA",
        "email": f"demo{index}@example.invalid",
    }
    status, created = call("POST", "/api/v1/patients/", body, {**auth, "Idempotency-Key": str(uuid.uuid4())})
    if status != 201:
        raise SystemExit(f"could not register a demo patient: {status} {created}")
    return created["id"]


# The patient status link of each sample, from the API's prescription detail (status_url).
status_urls: list[str] = []


def post_samples(credentials: dict[str, Any]) -> list[int]:
    auth = {"Authorization": f"Bearer {access_token(credentials)}"}
    # Fresh synthetic patients each run, so a re-run is not flagged as an early re-supply.
    patient_ids = [register_patient(auth, index) for index in range(4)]
    samples = [
        ("322236009", "Take one or two tablets every 4 to 6 hours, up to 8 a day", "32", 4),
        ("318135008", "Take one tablet once a day", "28", 28),
        ("39112111000001107", "Take one capsule once a day", "28", 28),
        ("324907005", "Take one tablet in the morning and one at lunchtime", "56", 28),
    ]
    words = {"28": "twenty eight", "56": "fifty six", "32": "thirty two"}
    today = time.strftime("%Y-%m-%d")
    # ADHD medicines need a diagnosis and recent monitoring (NICE NG87), sent with the prescription.
    adhd = {
        "diagnoses": [
            {"code_system": "http://hl7.org/fhir/sid/icd-10", "code": "F90.0", "recorded_on": today}
        ],
        "observations": [
            {"kind": "blood_pressure", "value": "118", "diastolic": "76", "observed_on": today},
            {"kind": "pulse", "value": "72", "observed_on": today},
            {"kind": "weight", "value": "64", "observed_on": today},
        ],
    }
    ids: list[int] = []
    status_urls.clear()
    for index, (code, dose, quantity, days) in enumerate(samples):
        body = {
            "patient": patient_ids[index % len(patient_ids)],
            "prescriber": credentials["prescriber_id"],
            "items": [
                {
                    "medication": {"system": "http://snomed.info/sct", "code": code},
                    "dose_text": dose,
                    "quantity": quantity,
                    "quantity_words": words[quantity],
                    "unit": "capsule" if code == "39112111000001107" else "tablet",
                    "days_supply": days,
                }
            ],
            **(adhd if code in ("39112111000001107", "324907005") else {}),
        }
        if index == 1:
            body["funding"] = "nhs"  # the GB demo clinic's NHS sample, charged per item
        status, created = call(
            "POST", "/api/v1/prescriptions/", body, {**auth, "Idempotency-Key": str(uuid.uuid4())}
        )
        print(
            f"  POST /api/v1/prescriptions/ -> {status} (prescription #{created.get('id')}, {created.get('status')})"
        )
        ids.append(created["id"])
        status_urls.append(created.get("status_url", ""))
    status, problem = call(
        "POST",
        "/api/v1/prescriptions/",
        {"patient": patient_ids[0], "items": [{"quantity": "-1"}]},
        {**auth, "Idempotency-Key": str(uuid.uuid4())},
    )
    print(
        f"  POST with bad fields -> {status} {problem.get('title')}: "
        f"{', '.join(error['pointer'] for error in problem.get('errors', []))}"
    )
    return ids


def post_us_sample(credentials: dict[str, Any]) -> int:
    """A US clinic's prescription: routing sends it to the mail-order pharmacy (licensed in the
    patient's state, no fee), not the gateway."""
    us = credentials["us_clinic"]
    auth = {"Authorization": f"Bearer {access_token(us)}"}
    patient = {
        "given_name": "Taylor",
        "family_name": "Demopatient",
        "birth_date": "1991-05-17",
        "sex": "unknown",
        "address_line": "20 State Street",
        "city": "Albany",
        "region": "NY",
        "postal_code": "12207",
        "email": "taylor@example.invalid",
    }
    status, created = call(
        "POST", "/api/v1/patients/", patient, {**auth, "Idempotency-Key": str(uuid.uuid4())}
    )
    # A second `make demo` finds the patient registered by the first: use that record.
    if status == 409 and isinstance(created.get("existing_patient_id"), int):
        created = {"id": created["existing_patient_id"]}
    elif status != 201:
        raise SystemExit(f"could not register the US demo patient: {status} {created}")
    today = time.strftime("%Y-%m-%d")
    body = {
        "patient": created["id"],
        "prescriber": us["prescriber_id"],
        "items": [
            {
                "medication": {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "349594"},
                "dose_text": "Take one capsule each morning",
                "quantity": "28",
                "quantity_words": "twenty eight",
                "unit": "capsule",
                "days_supply": 28,
            }
        ],
        "diagnoses": [
            {"code_system": "http://hl7.org/fhir/sid/icd-10", "code": "F90.0", "recorded_on": today}
        ],
        "observations": [
            {"kind": "blood_pressure", "value": "118", "diastolic": "76", "observed_on": today},
            {"kind": "pulse", "value": "72", "observed_on": today},
            {"kind": "weight", "value": "70", "observed_on": today},
        ],
    }
    status, prescription = call(
        "POST", "/api/v1/prescriptions/", body, {**auth, "Idempotency-Key": str(uuid.uuid4())}
    )
    print(f"  POST /api/v1/prescriptions/ (US clinic) -> {status} (prescription #{prescription.get('id')})")
    if status != 201:
        raise SystemExit(f"could not post the US sample: {status} {prescription}")
    return int(prescription["id"])


def wait_for_port(port: int, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{what} did not come up on port {port}; see var/log/")


def mcp_check(token: str) -> str:
    """Connect to the demo's MCP server with the SDK's own client, as an agent would."""
    import anyio
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def session_run() -> str:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
            streamable_http_client(MCP_URL, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = [tool.name for tool in (await session.list_tools()).tools]
            listed = await session.call_tool("prescriptions_list", {"page_size": 1})
            total = (listed.structured_content or {}).get("total", "?")
            return f"{len(tools)} tools ({', '.join(tools)}); prescriptions_list sees {total} prescriptions"

    return anyio.run(session_run)


def mcp_client_file(token: str) -> Path:
    """A ready client configuration (Claude Desktop's format) for the stdio server."""
    path = ROOT / "var" / "mcp-client.json"
    server = {
        "command": str(Path(PYTHON).absolute()),
        "args": [str(ROOT / "manage.py"), "run_mcp_server"],
        "env": {"SCRIPTLINE_MCP_TOKEN": token},
    }
    path.write_text(json.dumps({"mcpServers": {"scriptline": server}}, indent=2) + "\n")
    return path


def eps_order_message(nhs_number: str) -> dict[str, Any]:
    """A synthetic NHS EPS prescription-order from the demo GB clinic (ODS Y12345, GMC 7000001),
    written with Scriptline's own EPS encoder, as a clinic's prescribing system would send it."""
    from decimal import Decimal

    # `python scripts/demo.py` puts scripts/ on the path, not the project.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from pharmacy.fhir.eps import model
    from pharmacy.fhir.eps.encode import order_to_bundle
    from pharmacy.fhir.eps.mapping import entry_urls
    from pharmacy.fhir.eps.prescription_id import short_form_id

    message_id = str(uuid.uuid4())
    phone = model.ContactPoint("0113 496 0000", "work")
    address = model.Address(("1 Example Street",), "Leeds", "West Yorkshire", "LS2 9JT", "work")
    order = model.PrescriptionOrder(
        message_id=message_id,
        short_form_id=short_form_id(ods_code="Y12345", sequence=random.randrange(16**5)),
        long_form_id=str(uuid.uuid4()),
        prescription_type=model.Coding(
            model.PRESCRIPTION_TYPE_SYSTEM, "0101", "Primary Care Prescriber - Medical Prescriber"
        ),
        course_of_therapy=model.CourseOfTherapy.ACUTE,
        intent=model.Intent.ORDER,
        category=model.COMMUNITY,
        dispensing_site_preference=model.Coding(
            model.DISPENSING_SITE_PREFERENCE_SYSTEM, "P1", "Other (e.g. Community Pharmacy)"
        ),
        patient=model.Patient(
            nhs_number=nhs_number,
            name=model.HumanName("Demopatient", ("Sam",), use="usual"),
            gender="unknown",
            birth_date=__import__("datetime").date(1988, 5, 17),
            address=model.Address(("9 Example Street",), "Leeds", None, "LS1 1AA", "home"),
        ),
        practitioner=model.Practitioner(
            identifiers=(
                model.Identifier(model.SDS_USER_ID_SYSTEM, "555000000001"),
                model.Identifier(model.PROFESSIONAL_CODE_SYSTEMS["GMC"], "7000001"),
            ),
            name=model.HumanName("Hartley", ("Ada",), ("Dr",), "usual"),
        ),
        role=model.PractitionerRole(
            identifiers=(model.Identifier(model.SDS_ROLE_PROFILE_ID_SYSTEM, "200000000001"),),
            job_role=(
                model.Coding(model.SDS_JOB_ROLE_CODE_SYSTEM, "R8000", "Clinical Practitioner Access Role"),
            ),
            telecom=(phone,),
        ),
        organisation=model.Organisation("Y12345", "Riverside Neurodevelopmental Clinic", (phone,), address),
        items=(
            model.LineItem(
                item_number=str(uuid.uuid4()),
                medication=model.Coding(model.SNOMED, "322236009", "Paracetamol 500mg tablets"),
                quantity=model.Quantity(Decimal(32), "tablet", "428673006"),
                dosage=(model.Dosage("Take one or two tablets every 4 to 6 hours, up to 8 a day"),),
                expected_supply_days=4,
            ),
        ),
    )
    return order_to_bundle(order, urls=entry_urls(message_id))


def post_fhir_order(credentials: dict[str, Any]) -> int | None:
    """One order as an NHS EPS FHIR message to POST /fhir/R4/$process-message."""
    token = access_token(credentials)
    message = eps_order_message(test_range_nhs_number())
    request = urllib.request.Request(
        f"{BASE_URL}/fhir/R4/$process-message",
        data=json.dumps(message).encode(),
        method="POST",
        headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body = response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        status, body = error.code, json.loads(error.read() or b"{}")
    if status != 200:
        print(f"  POST /fhir/R4/$process-message -> {status} {json.dumps(body)[:300]}")
        return None
    focus = body["entry"][0]["resource"]["focus"][0]["reference"]
    print(f"  POST /fhir/R4/$process-message -> {status} (response message, ok; {focus})")
    return int(focus.split("/")[1].split("-")[0])


def watch(ids: list[int], seen: dict[int, str], auth: dict[str, str]) -> None:
    """Print each sample prescription's status as it changes."""
    status, page = call("GET", "/api/v1/prescriptions/", headers=auth)
    if status != 200:
        return
    for prescription in page["results"]:
        if prescription["id"] in ids and seen.get(prescription["id"]) != prescription["status"]:
            seen[prescription["id"]] = prescription["status"]
            print(f"  prescription #{prescription['id']}: {prescription['status']}")


def main() -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    print("Preparing the database ...")
    run("migrate", "--noinput", "-v", "0")
    run("collectstatic", "--noinput", "-v", "0")
    run("seed_demo", "--base-url", BASE_URL, "--mailorder-url", MAILORDER_URL)
    credentials = json.loads((ROOT / "var" / "demo-credentials.json").read_text())

    env = {
        **os.environ,
        "GATEWAY_URL": GATEWAY_URL,
        "STRIPE_API_BASE": STRIPE_URL,
        "DEMO_MODE": "1",
        # Status links (status_url) point at this demo's web server.
        "PUBLIC_BASE_URL": os.environ.get("PUBLIC_BASE_URL", BASE_URL),
    }
    processes = [start(name, command, env) for name, command in layout()]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        print("\nStopping ...")
        stop_all(processes)
        print("Stopped every process the demo started (the embedded database keeps running: make stop).")

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    try:
        wait_for(f"{BASE_URL}/health/", "the web server")
        wait_for(f"{GATEWAY_URL}/health", "the gateway simulator")
        wait_for(f"{STRIPE_URL}/health", "the Stripe simulator")
        wait_for(f"{MAILORDER_URL}/health", "the mail-order pharmacy simulator")
        wait_for_port(MCP_PORT, "the MCP server")
        print("Posting sample prescriptions through the API ...")
        ids = post_samples(credentials)
        mcp_token = access_token(credentials)
        mcp_status = mcp_check(mcp_token)
        mcp_config = mcp_client_file(mcp_token)
        ids.append(post_us_sample(credentials))
        fhir_id = post_fhir_order(credentials)
        if fhir_id is not None:
            ids.append(fhir_id)
        print(f"""
Scriptline is running.
  Admin         {BASE_URL}/admin/   (password scriptline-demo for every demo user, plus a
                TOTP code: `{os.path.relpath(PYTHON, ROOT)} scripts/demo_totp.py` prints the current ones)
  Staff         {", ".join(f"{name} ({account['role']})" for name, account in credentials["staff"].items())}
                authenticator URIs (otpauth://) in var/demo-credentials.json
  Back office   each role's work is on its first screen:
    pharmacist  {BASE_URL}/admin/prescriptions/pharmacistqueue/   (the methylphenidate sample waits here)
    support     {BASE_URL}/admin/support/enquiry/   (a "where is my order" enquiry waits; open the
                patient page and answer the identity check: Testperson, 1990-04-02, LS1 1AA)
    operator    {BASE_URL}/admin/dashboard/   (a dead letter waits to be replayed)
    finance     {BASE_URL}/admin/billing/claimbatch/   ("Build a month's claim", then "Export CSV")
  Metrics       curl -H "Authorization: Bearer $METRICS_TOKEN" {BASE_URL}/metrics
                (local default token: local-metrics-token-do-not-use-in-production)
  Status link   {status_urls[0] if status_urls else "(in each prescription's API detail: status_url)"}
                (what the patient sees; try it on a phone-sized window)
  API docs      {BASE_URL}/api/docs/
  API schema    {BASE_URL}/api/schema/
  FHIR          {BASE_URL}/fhir/R4/$process-message (NHS EPS messages), {BASE_URL}/fhir/R4/MedicationRequest
  Gateway sim   {GATEWAY_URL}/_stats   (partner "gateway": GB, and US controlled drugs)
  Mail-order    {MAILORDER_URL}/_stats   (partner "mailorder": the US sample; routing's reasons are
                on each dispatch's admin page, {BASE_URL}/admin/pharmacy/dispatch/)
  Stripe sim    {STRIPE_URL}/_stats   (pays each PaymentIntent after 2 s)
  Credentials   var/demo-credentials.json
  MCP server    {MCP_URL}   (streamable HTTP; send "Authorization: Bearer <token>", the token
                from POST {BASE_URL}/oauth/token/ with the demo credentials)
                checked just now with the SDK's client: {mcp_status}
                stdio, for a local agent: SCRIPTLINE_MCP_TOKEN=<token> {os.path.relpath(PYTHON, ROOT)} manage.py run_mcp_server
                a ready client configuration (Claude Desktop's claude_desktop_config.json format,
                token valid 10 minutes): {os.path.relpath(mcp_config, ROOT)}; README, "Agents: the MCP server"
Prescriptions {", ".join(f"#{i}" for i in ids)} move through checks, payment, dispatch and delivery
over the next ~20 seconds; the methylphenidate one waits for a pharmacist (log in as pharmacist,
open it, "Pharmacist review"). Press Ctrl-C to stop.""")
        deadline = time.monotonic() + float(os.environ.get("DEMO_SECONDS", "inf"))
        auth = {"Authorization": f"Bearer {access_token(credentials)}"}
        seen: dict[int, str] = {}
        while time.monotonic() < deadline:
            time.sleep(1)
            watch(ids, seen, auth)
            if any(process.poll() is not None for process in processes):
                raise SystemExit("a demo process stopped unexpectedly; see var/log/")
    except KeyboardInterrupt:
        pass
    finally:
        stop()


if __name__ == "__main__":
    main()
