"""`make bench-load`: intake throughput against a bare DRF insert endpoint, side by side.

Starts gunicorn (sync workers) for Scriptline and for `bench.bare` (a 7-field CreateAPIView, no
auth, no middleware) on the same PostgreSQL, in a database of their own (`scriptline_bench`), and
drives both with wrk, interleaved: bare, Scriptline, bare, Scriptline ... Every Scriptline request
is a one-item private prescription with a fresh Idempotency-Key, for one of 200 patients, through
the real OAuth token, tenancy, checks and outbox. Prints requests/s, p50 and p99 per round and
the ratio of the medians.

Options: --seconds per round (10), --rounds (2), --workers per gunicorn (4), --connections (16);
--e2e runs the end-to-end benchmark instead (scripts/bench_e2e.py, `make bench-e2e`).
Uses DATABASE_URL's server when set (a database named scriptline_bench on it), else the
embedded PostgreSQL under var/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BENCH_DATABASE = "scriptline_bench"

WRK_SCRIPT = r"""
local counter = 0
local thread_index = 0
function setup(thread)
  thread:set("index", thread_index)
  thread_index = thread_index + 1
end
function init(args)
  patients = {}
  for value in string.gmatch(os.getenv("BENCH_PATIENTS") or "", "[^,]+") do
    table.insert(patients, value)
  end
  prefix = string.format("%d-%d-%d-", os.time(), index, math.random(1, 1000000000))
  counter = index * 7
end
request = function()
  counter = counter + 1
  local headers = {["Content-Type"] = "application/json"}
  local body = os.getenv("BENCH_BODY")
  if os.getenv("BENCH_AUTH") ~= "" then
    headers["Authorization"] = os.getenv("BENCH_AUTH")
    headers["Idempotency-Key"] = prefix .. counter
    body = string.gsub(body, "PATIENT_ID", patients[(counter % #patients) + 1])
  end
  return wrk.format("POST", os.getenv("BENCH_PATH"), headers, body)
end
"""


def bench_database_url(database: str = BENCH_DATABASE) -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        sys.path.insert(0, str(ROOT))
        from config import embedded

        return embedded.postgres_url(ROOT / "var", database)
    import psycopg

    parts = urllib.parse.urlsplit(url)
    with psycopg.connect(urllib.parse.urlunsplit(parts._replace(path="/postgres")), autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone():
            admin.execute(f'CREATE DATABASE "{database}"')
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


def prepare(env: dict[str, str]) -> dict[str, Any]:
    """Migrate both apps and create a clinic, a client, a prescriber and 200 patients."""
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    bare_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.bare.settings"}
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "bench_bare", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=bare_env,
        check=True,
    )
    setup = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", SETUP_CODE],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(setup.stdout.strip().splitlines()[-1])


SETUP_CODE = r"""
import datetime, json, os, secrets
from django.core.management import call_command
from oauth2_provider.models import Application
from patients.models import ClinicClient
from patients.models import Clinic
from patients.services import patient_create
from prescriptions.models import Prescriber

call_command("load_formulary", verbosity=0)
# A GB clinic with what an NHS EPS message says about it (invented), as seed_demo makes one.
clinic = Clinic.objects.create(name=f"Bench clinic {secrets.token_hex(4)}", jurisdiction="GB", currency="GBP",
                               address="1 Example Street, Demo Town", ods_code=f"B{secrets.randbelow(10**5):05d}",
                               phone="0113 496 0000", address_line="1 Example Street", city="Leeds",
                               district="West Yorkshire", postal_code="LS2 9JT", managing_organisation_ods_code="QWO",
                               managing_organisation_name="NHS West Yorkshire Integrated Care Board")
# New people each run: the checks would otherwise see an earlier run's supply as an early re-supply.
run = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8))


def nhs_numbers():
    # The 999 range reserved for testing, with valid check digits (EPS identifies patients by it).
    number = 999000000 + secrets.randbelow(990000)
    while True:
        number += 1
        digits = [int(d) for d in str(number)]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1))) % 11
        if check != 10:
            yield f"{number}{0 if check == 11 else check}"


numbers = nhs_numbers()
prescriber = Prescriber.objects.create(clinic=clinic, given_name="Ada", family_name="Bench",
    registration_body="GMC", registration_number=str(7100000 + clinic.pk), address="1 Clinic Road, Leeds LS2 9JT",
    sds_user_id=str(555100000000 + clinic.pk), sds_role_profile_id=str(200100000000 + clinic.pk),
    sds_job_role_code="R8000")
secret = secrets.token_urlsafe(32)
application = Application(name=f"bench {clinic.pk}", client_type=Application.CLIENT_CONFIDENTIAL,
    authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS, client_secret=secret)
application.save()
ClinicClient.objects.create(application=application, clinic=clinic)
patients = [
    patient_create(clinic=clinic, given_name="Bench", family_name=f"Patient{run}{index}",
                   birth_date=datetime.date(1980 + index % 30, 1 + index % 12, 1 + index % 28), sex="unknown",
                   address_line="1 Example Street", city="Leeds", postal_code="LS1 1AA",
                   nhs_number=next(numbers)).pk
    for index in range(max(200, int(os.environ.get("BENCH_PATIENT_COUNT", "200"))))
]
print(json.dumps({"client_id": application.client_id, "client_secret": secret,
                  "prescriber": prescriber.pk, "patients": patients}))
"""


def start_gunicorn(
    wsgi: str, port: int, workers: int, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(
        [PYTHON, "-m", "gunicorn", wsgi, "-b", f"127.0.0.1:{port}", "-w", str(workers), "--timeout", "60"],
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=handle,
        start_new_session=True,
    )


def wait_for_port(port: int, path: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"nothing answered on port {port}; see var/log/bench-*.log")


def access_token(port: int, client_id: str, client_secret: str) -> str:
    form = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
    ).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/oauth/token/", data=form, timeout=10) as response:
        return str(json.loads(response.read())["access_token"])


def wrk_figure(pattern: str, output: str) -> str:
    match = re.search(pattern, output)
    if match is None:
        raise RuntimeError(f"wrk printed no {pattern!r}:\n{output}")
    return match.group(1)


def milliseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, script: Path, env: dict[str, str], seconds: int, connections: int) -> dict[str, float]:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    failures = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": float(wrk_figure(r"Requests/sec:\s+([\d.]+)", output)),
        "p50": milliseconds(wrk_figure(r"\n\s+50%\s+(\S+)", output)),
        "p99": milliseconds(wrk_figure(r"\n\s+99%\s+(\S+)", output)),
        "failed": float(failures.group(1)) if failures else 0.0,
    }


def main() -> None:
    if "--e2e" in sys.argv[1:]:
        # The whole journey instead (scripts/bench_e2e.py).
        sys.path.insert(0, str(ROOT / "scripts"))
        import bench_e2e

        bench_e2e.main(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8301")))
    arguments = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk (make bench-deps)")

    database_url = bench_database_url()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        # The intake's own cost: published by the relay, not by a worker in this run.
        "OUTBOX_PUBLISH_ON_COMMIT": os.environ.get("OUTBOX_PUBLISH_ON_COMMIT", "false"),
        "EMBEDDED_REDIS_DB": os.environ.get("EMBEDDED_REDIS_DB", "7"),
        # One client posts as fast as it can: its per-client limit (1200/minute by default) would
        # answer 429 past it. The throttle still runs (and costs what it costs) on every request.
        "API_RATE_LIMIT": os.environ.get("API_RATE_LIMIT", "1000000/minute"),
        "PYTHONPATH": str(ROOT),
    }
    print(f"preparing {BENCH_DATABASE} ...")
    setup = prepare(env)
    log_dir = ROOT / "var" / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    app_port, bare_port = arguments.port, arguments.port + 1
    processes = [
        start_gunicorn("config.wsgi", app_port, arguments.workers, env, log_dir / "bench-scriptline.log"),
        start_gunicorn(
            "bench.bare.wsgi",
            bare_port,
            arguments.workers,
            {**env, "DJANGO_SETTINGS_MODULE": "bench.bare.settings"},
            log_dir / "bench-bare.log",
        ),
    ]
    try:
        wait_for_port(app_port, "/health/")
        wait_for_port(bare_port, "/records/")
        token = access_token(app_port, str(setup["client_id"]), str(setup["client_secret"]))
        with tempfile.TemporaryDirectory() as scratch:
            script = Path(scratch) / "post.lua"
            script.write_text(WRK_SCRIPT)
            prescription = {
                "patient": "PATIENT_ID",
                "prescriber": setup["prescriber"],
                "items": [
                    {
                        "medication": {"system": "http://snomed.info/sct", "code": "322236009"},
                        "dose_text": "Take one tablet four times a day",
                        "quantity": "28",
                        "unit": "tablet",
                        "days_supply": 7,
                    }
                ],
            }
            scriptline_env = {
                **env,
                "BENCH_PATH": "/api/v1/prescriptions/",
                "BENCH_AUTH": f"Bearer {token}",
                "BENCH_BODY": json.dumps(prescription).replace('"PATIENT_ID"', "PATIENT_ID"),
                "BENCH_PATIENTS": ",".join(str(pk) for pk in setup["patients"]),
            }
            bare_env = {
                **env,
                "BENCH_PATH": "/records/",
                "BENCH_AUTH": "",
                "BENCH_BODY": json.dumps(
                    {
                        "reference": "r-1",
                        "name": "Paracetamol 500mg tablets",
                        "code": "322236009",
                        "quantity": "28",
                        "days": 7,
                        "note": "Take one tablet four times a day",
                    }
                ),
            }
            # Warm both (imports, connections) before measuring.
            run_wrk(f"http://127.0.0.1:{bare_port}", script, bare_env, 2, arguments.connections)
            run_wrk(f"http://127.0.0.1:{app_port}", script, scriptline_env, 2, arguments.connections)
            results: dict[str, list[dict[str, float]]] = {"bare": [], "scriptline": []}
            for round_number in range(1, arguments.rounds + 1):
                for name, port, name_env in (
                    ("bare", bare_port, bare_env),
                    ("scriptline", app_port, scriptline_env),
                ):
                    result = run_wrk(
                        f"http://127.0.0.1:{port}", script, name_env, arguments.seconds, arguments.connections
                    )
                    results[name].append(result)
                    print(
                        f"round {round_number}  {name:<10}  {result['rps']:8.1f} req/s   p50 {result['p50']:7.1f} ms"
                        f"   p99 {result['p99']:7.1f} ms   non-2xx {int(result['failed'])}"
                    )
        bare_rps = statistics.median(result["rps"] for result in results["bare"])
        app_rps = statistics.median(result["rps"] for result in results["scriptline"])
        print(
            f"\nbare DRF insert      {bare_rps:8.1f} req/s\n"
            f"POST /api/v1/prescriptions/ {app_rps:8.1f} req/s\n"
            f"ratio                {app_rps / bare_rps:8.2f}  (goal >= 0.25)\n"
            f"({arguments.workers} sync gunicorn workers each, wrk -t2 -c{arguments.connections}, "
            f"{os.cpu_count()} CPUs, database {BENCH_DATABASE})"
        )
        if any(result["failed"] for result in results["scriptline"] + results["bare"]):
            raise SystemExit("some requests failed; see var/log/bench-*.log")
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=15)


if __name__ == "__main__":
    main()
