"""Fixtures for fault injection: a gateway simulator and workers the tests may kill."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest

from prescriptions.formulary import formulary_load
from prescriptions.models import Medication
from tests.conftest import FORMULARY_FILE
from tests.processes import (
    ROOT,
    Simulator,
    purge_queues,
    start_beat,
    start_simulator,
    start_worker,
    stop_process,
)

pytestmark = pytest.mark.faults

LOG_DIR = ROOT / "var" / "log" / "faults"


@pytest.fixture
def paracetamol_loaded(transactional_db, settings) -> Medication:  # type: ignore[no-untyped-def]
    formulary_load(path=FORMULARY_FILE)  # the checks fail closed without it
    return Medication.objects.get(code="322236009")


@pytest.fixture
def gateway() -> Iterator[Simulator]:
    purge_queues()
    simulator = start_simulator(no_auto_advance=True)
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def workers(gateway) -> Iterator[Callable[..., subprocess.Popen[str]]]:  # type: ignore[no-untyped-def]
    """Start workers against the gateway simulator; all are stopped at the end."""
    started: list[subprocess.Popen[str]] = []
    LOG_DIR.mkdir(parents=True, exist_ok=True)

    def start(**extra_env: str) -> subprocess.Popen[str]:
        # Each worker logs at INFO to var/log/faults/ (every task received and how it ended).
        log = (LOG_DIR / f"worker-{len(started) + 1}.log").open("w")
        worker = start_worker(gateway_url=gateway.url, extra_env=extra_env, loglevel="INFO", log_file=log)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            stop_process(worker)
        purge_queues()


@pytest.fixture
def beat(gateway, transactional_db) -> Iterator[Callable[..., subprocess.Popen[str]]]:  # type: ignore[no-untyped-def]
    """Start Celery beat as `make demo` does (the relay every 2 s, the reconciler); stopped at
    the end, before the test database is emptied."""
    started: list[subprocess.Popen[str]] = []

    def start(**extra_env: str) -> subprocess.Popen[str]:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = (LOG_DIR / "beat.log").open("w")
        process = start_beat(gateway_url=gateway.url, extra_env=extra_env, log_file=log)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            stop_process(process)
