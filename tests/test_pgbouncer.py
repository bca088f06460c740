"""Tenant scoping through a real PgBouncer in transaction pooling, behind real gunicorn workers
that log in as the API role for clinic requests (the settings' default).

One server connection serves every client, so a clinic's role or scope left on the session would
show up in the next clinic's request. PgBouncer comes from the Debian package `pgbouncer`
(`make test-deps` installs it); it refuses to run as root, so the test runs it as the user that
owns the embedded PostgreSQL's socket (or `nobody` on a TCP server).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from accounts.database_roles import api_login_role
from tests.conftest import make_clinic_setup
from tests.patients.factories import PatientFactory

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db(transaction=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def pgbouncer() -> Iterator[int]:
    # Its own world-readable directory: PgBouncer runs as another user and pytest's are private.
    with tempfile.TemporaryDirectory(prefix="scriptline-pgbouncer-") as scratch:
        yield from _run_pgbouncer(Path(scratch))


def _run_pgbouncer(tmp_path: Path) -> Iterator[int]:
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    assert Path(binary).exists(), "PgBouncer is missing: apt-get install pgbouncer (or make test-deps)"
    database = connection.settings_dict
    host = database["HOST"] or "127.0.0.1"
    port = database["PORT"] or "5432"
    user = database["USER"] or "postgres"
    runs_as = "nobody"
    if host.startswith("/"):
        runs_as = pwd.getpwuid(Path(host).stat().st_uid).pw_name
    listen = _free_port()
    tmp_path.chmod(0o755)
    # The API's login role too: web requests log in as it (locally with the system password).
    api_user, api_password = api_login_role()
    (tmp_path / "users.txt").write_text(
        f'"{user}" "{database["PASSWORD"] or ""}"\n"{api_user}" "{api_password}"\n'
    )
    (tmp_path / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={host} port={port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = {"plain" if database["PASSWORD"] else "trust"}
auth_file = {tmp_path / "users.txt"}
pool_mode = transaction
default_pool_size = 1
max_db_connections = 1
max_client_conn = 100
ignore_startup_parameters = extra_float_digits,options
"""
    )
    for name in ("users.txt", "pgbouncer.ini"):
        (tmp_path / name).chmod(0o644)
    command = [binary, str(tmp_path / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command = [
            "setpriv",
            f"--reuid={runs_as}",
            f"--regid={pwd.getpwnam(runs_as).pw_gid}",
            "--clear-groups",
            *command,
        ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_port(listen, 15)
        yield listen
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
        assert "FATAL" not in output, output


@pytest.fixture
def web_through_pgbouncer(pgbouncer: int, tmp_path: Path) -> Iterator[str]:
    database = connection.settings_dict
    port = _free_port()
    url = f"postgres://{database['USER'] or 'postgres'}:{database['PASSWORD'] or ''}@127.0.0.1:{pgbouncer}/{database['NAME']}"
    log = (tmp_path / "web.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2"],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": url,
            # Persistent client connections: PgBouncer still hands out its one server connection
            # per transaction.
            "DATABASE_CONN_MAX_AGE": "60",
            # PgBouncer before 1.21 (Debian's) cannot carry prepared statements across
            # transactions in transaction pooling (settings: DATABASE_PREPARED_STATEMENTS).
            "DATABASE_PREPARED_STATEMENTS": "false",
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "OUTBOX_PUBLISH_ON_COMMIT": "false",
        },
        stdout=log,
        stderr=log,
    )
    try:
        _wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()
        assert "Traceback" not in (tmp_path / "web.log").read_text()


def _patient_ids(base_url: str, token: str) -> set[int]:
    request = urllib.request.Request(
        f"{base_url}/api/v1/patients/", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return {patient["id"] for patient in json.loads(response.read())["results"]}


def test_two_clinics_sharing_one_pooled_server_connection_each_see_only_their_own_patients(
    web_through_pgbouncer: str, pgbouncer: int
):
    clinic_a, clinic_b = make_clinic_setup("Clinic A"), make_clinic_setup("Clinic B")
    own = {
        clinic_a.token: {PatientFactory(clinic=clinic_a.clinic).pk for _ in range(3)},
        clinic_b.token: {PatientFactory(clinic=clinic_b.clinic).pk for _ in range(2)},
    }

    for _ in range(6):
        for token, patients in own.items():
            assert _patient_ids(web_through_pgbouncer, token) == patients

    # The requests logged in as the API role (its server connection is still pooled).
    database = connection.settings_dict
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND datname = %s",
            [api_login_role()[0], database["NAME"]],
        )
        assert cursor.fetchone()[0] >= 1

    # The one server connection is back on the system role with no clinic narrowed: the
    # tenant role and clinic id lived only as long as each request's transaction.
    with psycopg.connect(
        host="127.0.0.1",
        port=pgbouncer,
        dbname=database["NAME"],
        user=database["USER"] or "postgres",
        password=database["PASSWORD"] or None,
    ) as pooled:
        role, clinic_id = pooled.execute(
            "SELECT current_user, coalesce(current_setting('app.clinic_id', true), '')"
        ).fetchone()  # type: ignore[misc]
    assert role == (database["USER"] or "postgres")
    assert clinic_id in {"", "*"}
