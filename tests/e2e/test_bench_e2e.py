"""`make bench-e2e` for real, small: five prescriptions through the demo's process layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.e2e


def test_the_end_to_end_benchmark_delivers_every_prescription_and_reports_its_rates_and_cost():
    # Its own processes and database (scriptline_bench), as `make bench-e2e` runs it.
    environment = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    completed = subprocess.run(
        [sys.executable, "scripts/bench_load.py", "--e2e", "--prescriptions", "5", "--timeout", "300"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    result = json.loads(next(line for line in lines if line.startswith("E2E-RESULT ")).split(" ", 1)[1])
    assert result["prescriptions"] == 5
    assert result["clients"] == 8
    assert result["statuses"] == {"delivered": 5}
    assert result["acknowledged_per_second"] > 0
    assert 0 < result["delivered_per_second"] <= result["acknowledged_per_second"]
    assert result["cpu_ms_per_prescription"] > 0
    for label in ("to acknowledged", "to delivered", "CPU"):
        assert any(line.startswith(label) for line in lines), completed.stdout
