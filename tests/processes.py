"""Real processes for journey and fault tests: the simulators, Celery workers and beat."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
QUEUES = "default,events,checks,payments,dispatch,webhooks,notifications"
# tests/test_rabbitmq.py names the virtual hosts it creates (and deletes) for a run so.
RABBITMQ_TEST_VHOST_PREFIX = "scriptline-test-"


@dataclass
class Simulator:
    """A simulator process with its state file in a temporary directory of its own."""

    process: subprocess.Popen[str]
    url: str
    command: list[str]
    state_file: Path

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=5) as response:
            return json.loads(response.read())

    def messages(self) -> list[dict[str, Any]]:
        """Every message the gateway received, newest first."""
        with urllib.request.urlopen(f"{self.url}/_messages", timeout=5) as response:
            return json.loads(response.read())

    def control(self, **knobs: Any) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/_control",
            data=json.dumps(knobs).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        """Forget every order and counter, and clear the fault knobs."""
        request = urllib.request.Request(f"{self.url}/_reset", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=5).close()
        self.control(error_rate=0, down=False, timeout_rate=0, latency=0)

    def stop(self, *, keep_state: bool = False) -> None:
        stop_process(self.process)
        if not keep_state:
            shutil.rmtree(self.state_file.parent, ignore_errors=True)

    def kill(self) -> None:
        """Crash: SIGKILL, no chance to finish anything; the state file stays."""
        stop_process(self.process, sig=signal.SIGKILL)

    def restart(self, *arguments: str) -> None:
        """Stop the process (unless killed already) and start it again on the same port and
        state file, with `arguments` added to its command line."""
        stop_process(self.process)
        port = self.url.rsplit(":", 1)[-1]
        command = [*self.command, *arguments, "--port", port]
        self.process, self.url = _launch(command, module=command[2])


def start_simulator(*, webhook_url: str | None = None, step_delay: float = 0.2, **knobs: Any) -> Simulator:
    started = _simulator_process(
        "sandbox.gateway",
        [
            "--step-delay",
            str(step_delay),
            "--api-key",
            settings.GATEWAY_API_KEY,
            "--webhook-secret",
            settings.GATEWAY_WEBHOOK_SECRET,
        ],
        webhook_url=webhook_url,
        options=knobs,
    )
    return Simulator(*started)


def _simulator_process(
    module: str, arguments: list[str], *, webhook_url: str | None, options: dict[str, Any]
) -> tuple[subprocess.Popen[str], str, list[str], Path]:
    """Start `python -m <module> --port 0 ...` with a fresh state file and read the URL from
    its first line."""
    state_file = Path(tempfile.mkdtemp(prefix="sandbox-")) / "state.json"
    command = [sys.executable, "-m", module, *arguments, "--state-file", str(state_file)]
    if webhook_url:
        command += ["--webhook-url", webhook_url]
    for name, value in options.items():
        flag = f"--{name.replace('_', '-')}"
        command += [flag] if value is True else [flag, str(value)]
    process, url = _launch([*command, "--port", "0"], module=module)
    return process, url, command, state_file


def _launch(command: list[str], *, module: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = process.stdout.readline() if process.stdout else ""
    if "listening on" not in line:
        stop_process(process)
        raise RuntimeError(f"{module} did not start: {line!r}")
    return process, line.strip().rsplit(" ", 1)[-1]


def test_database_url() -> str:
    """A DATABASE_URL for the test database this process is using, for child processes."""
    params = connection.settings_dict
    user = quote(params.get("USER") or "postgres")
    password = f":{quote(params['PASSWORD'])}" if params.get("PASSWORD") else ""
    host = params.get("HOST") or ""
    if host.startswith("/"):
        return f"postgresql://{user}{password}@/{params['NAME']}?host={host}"
    port = f":{params['PORT']}" if params.get("PORT") else ""
    return f"postgresql://{user}{password}@{host}{port}/{params['NAME']}"


def purge_queues() -> None:
    from config.celery import app

    with app.connection_for_write() as broker:
        channel = broker.default_channel
        for queue in QUEUES.split(","):
            # A queue that does not exist yet has nothing to purge.
            with contextlib.suppress(Exception):
                channel.queue_purge(queue)


def queued_messages(queue: str) -> int:
    """Messages ready in `queue` (not those a worker holds), asked of the broker itself: a
    passive queue.declare answers with the count on RabbitMQ and on Redis alike."""
    from config.celery import app

    with app.connection_for_write() as broker:
        try:
            return broker.default_channel.queue_declare(queue=queue, passive=True).message_count
        except broker.channel_errors:
            # No such queue: on Redis an empty queue has no key at all.
            return 0


def broker_flush() -> None:
    """The broker loses every queued message, as a restart without persistence would: FLUSHDB
    of the suite's Redis database, or on RabbitMQ every task queue of the suite's vhost purged."""
    from config.celery import app

    if not settings.CELERY_BROKER_IS_AMQP:
        with app.connection_for_write() as broker:
            broker.default_channel.client.flushdb()
        return
    purge_queues()


def rabbitmq_vhost_disposable() -> str | None:
    """The RabbitMQ virtual host of this run when it is one tests/test_rabbitmq.py made for the
    run (so its connections are the suite's to break), else None."""
    if not settings.CELERY_BROKER_IS_AMQP or not shutil.which("rabbitmqctl"):
        return None
    from config.celery import app

    with app.connection_for_write() as broker:
        vhost = broker.virtual_host
    return vhost if vhost.startswith(RABBITMQ_TEST_VHOST_PREFIX) else None


def rabbitmq_connections_close(vhost: str) -> None:
    """Drop every client connection to `vhost`, as a broker restart would; RabbitMQ hands each
    unacknowledged message back to its queue at once."""
    subprocess.run(
        ["rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "fault injection"],
        check=True,
        capture_output=True,
        timeout=60,
    )


def start_worker(
    *,
    gateway_url: str,
    concurrency: int = 2,
    extra_env: dict[str, str] | None = None,
    loglevel: str = "WARNING",
    log_file: Any = None,
) -> subprocess.Popen[str]:
    env = _process_env(gateway_url=gateway_url, extra_env=extra_env)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            QUEUES,
            "--concurrency",
            str(concurrency),
            "--pool",
            "prefork",
            "--loglevel",
            loglevel,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env={**env, "LOG_LEVEL": loglevel} if log_file else env,
        start_new_session=True,
        text=True,
        stdout=log_file,
        stderr=log_file,
    )


def _process_env(*, gateway_url: str, extra_env: dict[str, str] | None) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "GATEWAY_URL": gateway_url,
        "GATEWAY_API_KEY": settings.GATEWAY_API_KEY,
        "GATEWAY_WEBHOOK_SECRET": settings.GATEWAY_WEBHOOK_SECRET,
        "OUTBOX_PUBLISH_ON_COMMIT": "true",
        **(extra_env or {}),
    }


def start_beat(
    *, gateway_url: str = "", extra_env: dict[str, str] | None = None, log_file: Any = None
) -> subprocess.Popen[str]:
    """Celery beat with the project's scheduler (django-celery-beat), as `make demo` runs it."""
    env = _process_env(gateway_url=gateway_url or settings.GATEWAY_URL, extra_env=extra_env)
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"],
        cwd=ROOT,
        env={**env, "LOG_LEVEL": "INFO"},
        start_new_session=True,
        text=True,
        stdout=log_file,
        stderr=log_file,
    )


def stop_process(
    process: subprocess.Popen[str],
    sig: int = signal.SIGTERM,
    timeout: float = 15,
    *,
    whole_group: bool = True,
) -> None:
    """Signal the process (and by default its whole process group), then kill the group if it
    outlives `timeout`. A Celery worker's warm shutdown wants the signal on its main process only,
    as a supervisor sends it: a pool child signalled directly dies mid-task."""
    if process.poll() is not None:
        return
    try:
        if whole_group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            process.kill()
        process.wait(timeout=5)


def wait_until(predicate: Callable[[], bool], *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


# --- The Stripe simulator as a process ------------------------------------------------------------


@dataclass
class StripeSimulator(Simulator):
    def events(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/_events", timeout=5) as response:
            return json.loads(response.read())["data"]

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/_reset", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=5).close()


def start_stripe_simulator(*, webhook_url: str | None = None, **options: Any) -> StripeSimulator:
    started = _simulator_process(
        "sandbox.stripe",
        ["--api-key", settings.STRIPE_SECRET_KEY, "--webhook-secret", settings.STRIPE_WEBHOOK_SECRET],
        webhook_url=webhook_url,
        options=options,
    )
    return StripeSimulator(*started)


# --- The mail-order pharmacy simulator as a process -------------------------------------------

MAILORDER_API_KEY = "test-mailorder-key"


@dataclass
class MailOrderSimulator(Simulator):
    api_key: str = MAILORDER_API_KEY

    def reset(self) -> None:
        """Forget every order and counter, restock, and clear the fault knobs."""
        request = urllib.request.Request(f"{self.url}/_reset", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=5).close()
        self.control(
            error_rate=0,
            down=False,
            timeout_rate=0,
            rate_limit_rate=0,
            latency=0,
            stall=False,
            out_of_stock=[],
        )

    def set_stock(self, **levels: int) -> dict[str, int]:
        request = urllib.request.Request(
            f"{self.url}/_stock",
            data=json.dumps(levels).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())


def start_mailorder_simulator(*, step_delay: float = 0.2, **options: Any) -> MailOrderSimulator:
    """`python -m sandbox.mailorder` on a free port with a state file of its own."""
    started = _simulator_process(
        "sandbox.mailorder",
        ["--api-key", MAILORDER_API_KEY, "--step-delay", str(step_delay)],
        webhook_url=None,
        options=options,
    )
    return MailOrderSimulator(*started)
