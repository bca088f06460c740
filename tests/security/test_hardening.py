"""Production settings pass the deploy checks; the admin has a CSP; oversized bodies get 413."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_production_settings_pass_check_deploy_with_no_warnings():
    env = {
        **os.environ,
        "SCRIPTLINE_LOCAL": "false",
        "SECRET_KEY": "x" * 20 + "production-like-secret-with-enough-entropy-0123456789",
        "PHI_SALT_KEYS": "salt-new,salt-old",
        "BLIND_INDEX_KEY": "blind-index-key",
        "ALLOWED_HOSTS": "scriptline.example",
        "DATABASE_URL": "postgresql://scriptline:pw@127.0.0.1:1/scriptline",
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
        "METRICS_TOKEN": "metrics-token-for-the-deploy-check",
        "PUBLIC_BASE_URL": "https://scriptline.example",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_refuse_to_start_without_the_phi_keys():
    env = {**os.environ, "SCRIPTLINE_LOCAL": "false", "SECRET_KEY": "s" * 60}
    env.pop("PHI_SALT_KEYS", None)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; django.setup()",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "PHI_SALT_KEYS" in result.stderr


@pytest.mark.parametrize("missing", ["METRICS_TOKEN", "PUBLIC_BASE_URL"])
def test_production_settings_refuse_to_start_without_the_metrics_token_or_public_url(missing):
    env = {
        **os.environ,
        "SCRIPTLINE_LOCAL": "false",
        "SECRET_KEY": "s" * 60,
        "PHI_SALT_KEYS": "salt",
        "BLIND_INDEX_KEY": "blind",
        "METRICS_TOKEN": "token",
        "PUBLIC_BASE_URL": "https://scriptline.example",
    }
    env.pop(missing)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; django.setup()",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert f"Set the {missing} environment variable" in result.stderr


@pytest.mark.django_db
def test_admin_pages_carry_a_content_security_policy_and_deny_framing(client):
    response = client.get("/admin/login/")

    assert response.status_code == 200
    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_an_oversized_body_gets_413_problem_json_and_stores_nothing(clinic_a, settings):
    from patients.models import IdempotencyKey, Patient

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = {"given_name": "A" * 4000, "family_name": "B", "birth_date": "1990-01-01"}

    response = clinic_a.api.post("/api/v1/patients/", body, format="json", HTTP_IDEMPOTENCY_KEY="big-1")

    assert response.status_code == 413
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 413
    assert (Patient.objects.count(), IdempotencyKey.objects.count()) == (0, 0)


def test_a_nul_character_in_a_query_parameter_is_a_400_problem(clinic_a):  # type: ignore[no-untyped-def]
    response = clinic_a.api.get("/api/v1/medications/?search=para%00cetamol")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["detail"] == "Query parameters must not contain NUL characters."
