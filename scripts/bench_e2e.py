"""`make bench-e2e` (or `make bench-load BENCH_ARGS=--e2e`): prescriptions through the whole journey.

Starts the demo's process layout (scripts/demo.py `layout`: gunicorn with 2 workers, one Celery
worker on every queue, beat, the gateway simulator and the Stripe simulator auto-confirming
payments; no MCP server) on the benchmark database, posts N private one-item prescriptions (one
per synthetic patient) from 8 client threads through the real API, and waits until every one is
delivered: checks, payment through the Stripe simulator, dispatch to the gateway simulator, and
its webhooks back. Prints the rate to `acknowledged` and to `delivered` (N over the time from the
first POST to the last such event) and the CPU time per prescription.

CPU counted: every process this script started, with their children (gunicorn's and Celery's
workers), and the embedded PostgreSQL and Redis servers (all their processes, including
backends that exited during the run), from just before the first POST to the last delivery.
Not counted: this script's client threads, and a server given by DATABASE_URL. Everything
else on the machine is also running, so the rates depend on the load: see `uptime`.

Options: --prescriptions N (200), --clients (8), --step-delay and --confirm-delay (the
simulators' pace, 0.5 s; the demo's are 3 and 2 s), --timeout seconds (600).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import bench_load  # noqa: E402 - the sibling script, for the database and the data it prepares
import demo  # noqa: E402 - the demo's process layout

MILESTONES = ("acknowledged", "delivered")
# Statuses a bench prescription never leaves by itself: the run has gone wrong.
STUCK = {
    "awaiting_pharmacist",
    "rejected",
    "payment_failed",
    "dead_lettered",
    "cancelled",
    "rejected_by_pharmacy",
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- CPU time from /proc --------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(roots: list[int]) -> float:
    """CPU time of `roots` and all their live descendants, plus the children they reaped."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    ticks = 0
    pending = list(roots)
    seen: set[int] = set()
    while pending:
        pid = pending.pop()
        if pid in seen or (fields := _stat(pid)) is None:
            continue
        seen.add(pid)
        # utime, stime, cutime, cstime (fields 14-17; 12-15 after the command name).
        ticks += sum(int(value) for value in fields[11:15])
        pending += parents.get(pid, [])
    return ticks / CLOCK_TICKS


def server_pids() -> dict[str, int]:
    """The embedded PostgreSQL's postmaster and the embedded Redis, when they run here."""
    found: dict[str, int] = {}
    for name, pid_file in (
        ("postgres", ROOT / "var" / "postgres" / "postmaster.pid"),
        ("redis", ROOT / "var" / "redis" / "redis.pid"),
    ):
        if (
            not os.environ.get("DATABASE_URL" if name == "postgres" else "CELERY_BROKER_URL")
            and pid_file.exists()
        ):
            found[name] = int(pid_file.read_text().split()[0])
    return found


# --- The run ----------------------------------------------------------------------------------------
def post_prescription(base_url: str, token: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        f"{base_url}/api/v1/prescriptions/",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": str(uuid.uuid4()),
        },
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        if response.status != 201:
            raise SystemExit(f"POST /api/v1/prescriptions/ answered {response.status}")
        return int(json.loads(response.read())["id"])


def milestones(database_url: str, ids: list[int]) -> tuple[dict[str, list[float]], dict[str, int]]:
    """When each prescription reached each milestone (epoch seconds), and where they all are."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("SELECT set_config('app.clinic_id', '*', false)")
        reached: dict[str, list[float]] = {name: [] for name in MILESTONES}
        for event_type, at in connection.execute(
            "SELECT type, extract(epoch FROM created_at) FROM events_event"
            " WHERE aggregate_type = 'prescription' AND aggregate_id = ANY(%s) AND type = ANY(%s)",
            [ids, [f"prescription.{name}" for name in MILESTONES]],
        ):
            reached[event_type.split(".", 1)[1]].append(float(at))
        statuses = dict(
            connection.execute(
                "SELECT status, count(*) FROM prescriptions_prescription WHERE id = ANY(%s) GROUP BY status",
                [ids],
            ).fetchall()
        )
    return reached, statuses


E2E_DATABASE = "scriptline_bench_e2e"


def leftovers_drop(database_url: str, env: dict[str, str]) -> None:
    """Work an earlier, interrupted run left behind is not this run's: its queued messages are
    purged and its outbox rows settled, so the CPU counted is this run's prescriptions'."""
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "config", "purge", "-f", "-Q", demo.QUEUES],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("SELECT set_config('app.clinic_id', '*', false)")
        connection.execute(
            "UPDATE events_outboxmessage SET published_at = coalesce(published_at, now()), settled_at = now()"
            " WHERE settled_at IS NULL"
        )
        connection.execute("DELETE FROM events_outboxtask")
        # An interrupted run's prescriptions would otherwise be picked up by the reconciler.
        connection.execute(
            "UPDATE prescriptions_prescription SET status = 'cancelled', updated_at = now()"
            " WHERE status NOT IN ('delivered', 'cancelled', 'rejected')"
        )


def wait_for_worker(log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if log.exists() and " ready." in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise SystemExit(f"the Celery worker did not become ready; see {log}")


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    count = arguments.prescriptions
    # Its own database: the load benchmark leaves thousands of received prescriptions behind.
    database_url = bench_load.bench_database_url(E2E_DATABASE)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "EMBEDDED_REDIS_DB": os.environ.get("EMBEDDED_REDIS_DB", "7"),
        "PYTHONPATH": str(ROOT),
        "BENCH_PATIENT_COUNT": str(count),
    }
    print(f"preparing {E2E_DATABASE} ({count} patients) ...")
    setup = bench_load.prepare(env)
    leftovers_drop(database_url, env)
    web_port, gateway_port, stripe_port = free_port(), free_port(), free_port()
    base_url = f"http://127.0.0.1:{web_port}"
    env.update(
        GATEWAY_URL=f"http://127.0.0.1:{gateway_port}",
        STRIPE_API_BASE=f"http://127.0.0.1:{stripe_port}",
        PUBLIC_BASE_URL=base_url,
    )
    log_dir = ROOT / "var" / "log" / f"bench-e2e-{int(time.time())}"
    log_dir.mkdir(parents=True, exist_ok=True)
    commands = demo.layout(
        web_port=web_port,
        gateway_port=gateway_port,
        stripe_port=stripe_port,
        mcp_port=None,
        mailorder_port=free_port(),
        step_delay=arguments.step_delay,
        confirm_delay=arguments.confirm_delay,
        simulator_state=False,
    )
    processes = [demo.start(name, command, env, log_dir) for name, command in commands]
    # Stopped from outside (a timeout, Ctrl-C): still stop everything it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        bench_load.wait_for_port(web_port, "/health/")
        bench_load.wait_for_port(gateway_port, "/health")
        bench_load.wait_for_port(stripe_port, "/health")
        wait_for_worker(log_dir / "worker.log")
        token = bench_load.access_token(web_port, str(setup["client_id"]), str(setup["client_secret"]))
        bodies = [
            {
                "patient": patient,
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
            for patient in setup["patients"][:count]  # type: ignore[index]  # prepare() answers JSON
        ]
        roots = {name: process.pid for (name, _command), process in zip(commands, processes, strict=True)}
        roots.update(server_pids())
        cpu_before = {name: cpu_seconds([pid]) for name, pid in roots.items()}
        started = time.time()
        with ThreadPoolExecutor(max_workers=arguments.clients) as clients:
            ids = list(clients.map(lambda body: post_prescription(base_url, token, body), bodies))
        posted = time.time()
        deadline = time.monotonic() + arguments.timeout
        last_print = 0.0
        while True:
            reached, statuses = milestones(database_url, ids)
            if len(reached["delivered"]) == count:
                break
            if stuck := {status: number for status, number in statuses.items() if status in STUCK}:
                raise SystemExit(f"some prescriptions stopped short of delivery: {stuck}; see {log_dir}")
            if any(process.poll() is not None for process in processes):
                raise SystemExit(f"a process stopped unexpectedly; see {log_dir}")
            if time.monotonic() > deadline:
                raise SystemExit(f"not all delivered after {arguments.timeout} s: {statuses}; see {log_dir}")
            if time.monotonic() - last_print > 5:
                last_print = time.monotonic()
                print(f"  {time.time() - started:6.1f} s  {statuses}", flush=True)
            time.sleep(0.5)
        cpu_after = {name: cpu_seconds([pid]) for name, pid in roots.items()}
    finally:
        demo.stop_all(processes)
    result = {
        "prescriptions": count,
        "clients": arguments.clients,
        "posted_per_second": count / (posted - started),
        "acknowledged_per_second": count / (max(reached["acknowledged"]) - started),
        "delivered_per_second": count / (max(reached["delivered"]) - started),
        "cpu_ms_per_prescription": sum(cpu_after[name] - cpu_before[name] for name in roots) * 1000 / count,
        "cpu_ms_by_process": {
            name: round((cpu_after[name] - cpu_before[name]) * 1000 / count, 1) for name in roots
        },
        "statuses": statuses,
    }
    print(
        f"\n{count} prescriptions, {arguments.clients} clients, demo layout on {os.cpu_count()} CPUs "
        f"(simulators in memory, steps {arguments.step_delay} s, payment confirmed after {arguments.confirm_delay} s)\n"
        f"posted           {result['posted_per_second']:8.1f} prescriptions/s\n"
        f"to acknowledged  {result['acknowledged_per_second']:8.1f} prescriptions/s   (goal >= 25 to delivered)\n"
        f"to delivered     {result['delivered_per_second']:8.1f} prescriptions/s\n"
        f"CPU              {result['cpu_ms_per_prescription']:8.1f} ms per prescription   (goal <= 80)\n"
        f"                 {', '.join(f'{name} {ms}' for name, ms in result['cpu_ms_by_process'].items())}\n"
        f"logs             {os.path.relpath(log_dir, ROOT)}\n"
        f"E2E-RESULT {json.dumps(result)}"
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--e2e", action="store_true", help="accepted for `make bench-load BENCH_ARGS=--e2e`")
    parser.add_argument("--prescriptions", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--step-delay", type=float, default=0.5)
    parser.add_argument("--confirm-delay", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=600)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
