"""deploy/: the compose file and image are the shape the README's "Running at scale" describes,
and the environment they give Scriptline passes `check --deploy` in production mode."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from cryptography.fernet import Fernet
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
SCRIPTLINE = {
    name: service for name, service in SERVICES.items() if service.get("image") == "scriptline:latest"
}


def _interpolated(value: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+):\?\}", lambda match: values[match.group(1)], value)


def _required_variables() -> set[str]:
    return set(re.findall(r"\$\{(\w+):\?\}", (DEPLOY / "compose.yaml").read_text()))


def _queues(service: dict[str, Any]) -> set[str]:
    command = service["command"]
    return set(command[command.index("-Q") + 1].split(","))


def test_web_workers_beat_and_migrations_share_one_image_and_one_environment():
    assert set(SCRIPTLINE) == {"migrate", "web", "mcp", "worker-saga", "worker-partners", "beat"}
    for name, service in SCRIPTLINE.items():
        assert service["environment"]["SCRIPTLINE_LOCAL"] == "false", name
        assert service["build"]["dockerfile"] == "deploy/Dockerfile", name


def test_exactly_one_beat_runs_and_only_the_beat_service_runs_it():
    assert SERVICES["beat"]["deploy"]["replicas"] == 1
    assert SERVICES["beat"]["command"][:4] == ["celery", "-A", "config", "beat"]
    others = [name for name, service in SCRIPTLINE.items() if name != "beat" and "beat" in service["command"]]
    assert others == []


def test_the_worker_groups_together_consume_every_queue_and_each_queue_once():
    workers = [service for name, service in SCRIPTLINE.items() if name.startswith("worker-")]
    consumed = [queue for service in workers for queue in _queues(service)]
    assert sorted(consumed) == sorted(settings.CELERY_QUEUES_ALL.split(","))


def test_a_consumer_run_in_another_tasks_process_is_consumed_by_that_tasks_worker_group():
    # saga.journey.RUN_HERE: a task runs some consumers of its own events itself; both must be
    # work for the same worker group, or a slow partner could hold up the other group's queues.
    from celery.app.routes import MapRoute

    from saga import journey

    route = MapRoute(settings.CELERY_TASK_ROUTES)

    def group(task: str) -> str:
        queue = (route(task) or {"queue": settings.CELERY_TASK_DEFAULT_QUEUE})["queue"]
        (name,) = [
            name
            for name, service in SCRIPTLINE.items()
            if name.startswith("worker-") and queue in _queues(service)
        ]
        return name

    assert journey.RUN_HERE
    for task, consumers in journey.RUN_HERE.items():
        for consumer in consumers:
            assert group(consumer) == group(task), (task, consumer)


def test_web_reaches_postgres_through_pgbouncer_in_transaction_pooling_and_workers_directly():
    assert "@pgbouncer:" in SERVICES["web"]["environment"]["DATABASE_URL"]
    assert "@pgbouncer:" in SERVICES["mcp"]["environment"]["DATABASE_URL"]
    assert SERVICES["mcp"]["command"][1:5] == ["manage.py", "run_mcp_server", "--http", "8001"]
    assert SERVICES["pgbouncer"]["environment"]["POOL_MODE"] == "transaction"
    for name in ("migrate", "worker-saga", "worker-partners", "beat"):
        assert "@postgres:" in SCRIPTLINE[name]["environment"]["DATABASE_URL"], name
    assert SCRIPTLINE["worker-saga"]["environment"]["CELERY_BROKER_URL"].startswith("amqp://")


def test_the_image_installs_the_pinned_requirements_and_runs_unprivileged():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r requirements.txt" in dockerfile
    assert "collectstatic" in dockerfile
    assert re.search(r"^USER scriptline$", dockerfile, re.MULTILINE)
    pinned = [
        line for line in (ROOT / "requirements.txt").read_text().splitlines() if line and line[0].isalpha()
    ]
    assert pinned
    assert all("==" in line for line in pinned)


def test_the_compose_environment_passes_check_deploy_in_production_mode():
    values = {name: secrets.token_urlsafe(48) for name in _required_variables()}
    values.update(
        ALLOWED_HOSTS="scriptline.example.com",
        GATEWAY_URL="https://gateway.example.com",
        PUBLIC_BASE_URL="https://scriptline.example.com",
        EMAIL_HOST="smtp.example.com",
        # Fernet keys, newest first (a rotation in progress).
        PHI_ENCRYPTION_KEYS=f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}",
    )
    environment = {
        name: _interpolated(str(value), values) for name, value in SERVICES["web"]["environment"].items()
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **environment},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
