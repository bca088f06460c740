"""Scriptline settings: every deployment value comes from the environment.

With no environment set (a fresh clone), an embedded PostgreSQL and Redis are started under
`var/` (see config/embedded.py). `.env.example` lists every variable.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from common import logs
from saga import journey

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("SCRIPTLINE_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
# Local development and tests; SCRIPTLINE_LOCAL=false (production) makes every secret and
# server mandatory and turns on HTTPS-only cookies, redirects and HSTS.
_LOCAL = DEBUG or env.bool("SCRIPTLINE_LOCAL", default=True)

# --- Fail closed: outside local mode every secret and server comes from the environment ------
# Each value's local default (the simulators, the embedded servers, public throw-away keys)
# exists only in local mode. Outside it, startup stops with one error naming every variable
# that is missing, so a deployment is never half-configured on a repository's public values.
# An empty DATABASE_URL / CELERY_BROKER_URL means "start the embedded server" (local only).
_LOCAL_DEFAULTS = {
    "SECRET_KEY": "local-insecure-key-do-not-use-in-production",
    "ALLOWED_HOSTS": "localhost,127.0.0.1,[::1],testserver",
    "DATABASE_URL": "",
    # Empty: the API login role `scriptline_api` on DATABASE_URL's server (local only).
    "DATABASE_API_URL": "",
    "CELERY_BROKER_URL": "",
    "CACHE_URL": "locmemcache://",
    # A Fernet key (Fernet.generate_key()), public: local data only.
    "PHI_ENCRYPTION_KEYS": "bG9jYWwtcGhpLWtleS1kby1ub3QtdXNlLWluLXByb2Q=",
    "BLIND_INDEX_KEY": "local-blind-index-key-do-not-use-in-production",
    "GATEWAY_URL": "http://127.0.0.1:8765",
    "GATEWAY_API_KEY": "sim-gateway-key",
    "GATEWAY_WEBHOOK_SECRET": "sim-webhook-secret",
    "STRIPE_API_BASE": "http://127.0.0.1:12111",
    "STRIPE_SECRET_KEY": "sk_test_scriptline_simulator",
    "STRIPE_WEBHOOK_SECRET": "whsec_scriptline_simulator",
    "METRICS_TOKEN": "local-metrics-token-do-not-use-in-production",
    "PUBLIC_BASE_URL": "http://127.0.0.1:8000",
}
# The repository's public values: refused outside local mode even when set explicitly
# (config/checks.py reports them under `check --deploy`).
PUBLIC_LOCAL_VALUES = {name: value for name, value in _LOCAL_DEFAULTS.items() if value}
_MISSING = [name for name in _LOCAL_DEFAULTS if not _LOCAL and not env.str(name, default="").strip()]
if _MISSING:
    raise ImproperlyConfigured(
        "SCRIPTLINE_LOCAL is false, so these environment variables must be set (see .env.example): "
        + ", ".join(_MISSING)
    )


def _deployment(name: str) -> str:
    return env.str(name, default=_LOCAL_DEFAULTS[name] if _LOCAL else "").strip()


SECRET_KEY = _deployment("SECRET_KEY")
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
# --- Patient data at rest (patients.phi) ---------------------------------------------------------
# PHI_ENCRYPTION_KEYS: Fernet keys, newest first, independent of SECRET_KEY (which can then
# rotate routinely without touching patient data). The first encrypts, every one decrypts.
# Rotate: put a new key first, run `manage.py rotate_keys`, then drop the old one.
# PHI_SALT_KEYS (optional): the former keys derived from SECRET_KEY and these salts, kept for
# decryption only until `rotate_keys` has re-encrypted everything under PHI_ENCRYPTION_KEYS.
# BLIND_INDEX_KEY keys the HMACs used for exact-match search (rotate_keys recomputes them).
PHI_ENCRYPTION_KEYS = [key.strip() for key in _deployment("PHI_ENCRYPTION_KEYS").split(",") if key.strip()]
SALT_KEY = env.list("PHI_SALT_KEYS", default=["local-phi-salt-do-not-use-in-production"] if _LOCAL else [])
BLIND_INDEX_KEY = _deployment("BLIND_INDEX_KEY")

ALLOWED_HOSTS = [host.strip() for host in _deployment("ALLOWED_HOSTS").split(",") if host.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "oauth2_provider",
    "django_celery_beat",
    # Staff security: object permissions, 2FA, lockout, model audit log.
    "guardian",
    "django_otp",
    "support.apps.TwoFactorDevicesConfig",  # django_otp.plugins.otp_totp, named for staff
    "support.apps.SignInLockoutsConfig",  # axes, named for staff
    "auditlog",
    # Scriptline, lowest layer first (README, "How the code is laid out").
    "accounts",
    "events",
    "audit",
    "patients",
    "prescriptions",
    "pharmacy",
    "billing",
    "notifications",
    "support",
    "saga",
    "interop",
    # The MCP server for agents (manage.py run_mcp_server): an entry point like the API.
    "agents",
    # Development and test stand-ins for the partners (manage.py run_*_simulator); nothing
    # in the product imports it.
    "sandbox",
    # Project-wide `check --deploy` checks (config/checks.py).
    "config.apps.DeployChecksConfig",
]

MIDDLEWARE = [
    "common.logs.RequestIdMiddleware",
    # Patient data is never cached: Cache-Control: no-store on the API and the status link.
    "api.hardening.NoStoreMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Sessions, users and messages are the staff's: the clinic API skips them (config/middleware.py).
    "config.middleware.StaffSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "config.middleware.StaffAuthenticationMiddleware",
    # Staff: a session is admin-capable only once a TOTP token was verified (django-otp).
    "django_otp.middleware.OTPMiddleware",
    # Audit: who and from where, for every audited model change (audit.middleware).
    "audit.middleware.AuditActorMiddleware",
    "api.hardening.RejectNullCharactersMiddleware",
    # Clinic API requests: one transaction, narrowed to the caller's clinic (accounts.tenancy).
    "accounts.tenancy.TenantTransactionMiddleware",
    "config.middleware.StaffMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "api.hardening.AdminContentSecurityPolicyMiddleware",
    # Last, as django-axes requires: refuses logins for locked-out usernames.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: PostgreSQL only -------------------------------------------------------------


def _database_from_environment() -> dict[str, Any]:
    # Outside local mode DATABASE_URL is mandatory (checked above): never the embedded server.
    if env.str("DATABASE_URL", default="") or not _LOCAL:
        return env.db_url("DATABASE_URL")
    from config import embedded

    database = env.db_url_config(embedded.postgres_url(VAR_DIR))
    # A unix-socket directory given as ?host= belongs in HOST, where child processes look.
    options = dict(database.get("OPTIONS", {}))
    return {**database, "HOST": options.pop("host", ""), "OPTIONS": options}


_database = _database_from_environment()
if _database["ENGINE"] != "django.db.backends.postgresql":
    raise RuntimeError("Scriptline needs PostgreSQL (row-level security, SELECT ... FOR UPDATE).")
DATABASES = {
    "default": {
        **_database,
        # Persistent connections: a sync gunicorn worker serves one request at a time, so one
        # connection per process, kept, is the pool (no connect + system-scope query per request).
        # Checked before reuse; 0 closes after every request (e.g. behind PgBouncer).
        "CONN_MAX_AGE": env.int("DATABASE_CONN_MAX_AGE", default=60),
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"NAME": env.str("DATABASE_TEST_NAME", default=f"test_{_database['NAME']}")},
        "OPTIONS": {
            **_database.get("OPTIONS", {}),
            # The hot reads written in SQL (common.rows.planned_cursor) are planned once per
            # connection: psycopg prepares a statement the fifth time a connection runs it.
            # Off behind a pooler that cannot carry prepared statements across transactions
            # (PgBouncer before 1.21, or without max_prepared_statements, in transaction mode).
            "prepare_threshold": 5 if env.bool("DATABASE_PREPARED_STATEMENTS", default=True) else None,
        },
    }
}
# The clinic API's login role (accounts.database_roles): `migrate` creates or updates it with
# this URL's user and password, and clinic-facing requests log in as it (accounts.tenancy;
# the database is always DATABASE_URL's, host, port and CONN_MAX_AGE may differ). Local mode
# without it: `scriptline_api` with DATABASE_URL's password on DATABASE_URL's server (the
# embedded server trusts its socket).
if env.str("DATABASE_API_URL", default="") or not _LOCAL:
    DATABASE_API: dict[str, Any] = env.db_url("DATABASE_API_URL")
else:
    DATABASE_API = {"USER": "scriptline_api", "PASSWORD": _database.get("PASSWORD") or ""}
# Clinic-facing requests (API, FHIR, MCP) run on a connection logged in as that role. Only local
# mode may turn it off: unit tests, whose data sits in a transaction on the system connection,
# narrow with SET LOCAL ROLE on that connection instead (tests/conftest.py).
API_LOGIN_CONNECTION = env.bool("API_LOGIN_CONNECTION", default=True) or not _LOCAL
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Celery ----------------------------------------------------------------------------------
if env.str("CELERY_BROKER_URL", default="") or not _LOCAL:
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL")
else:
    from config import embedded

    CELERY_BROKER_URL = embedded.redis_url(VAR_DIR, db=env.int("EMBEDDED_REDIS_DB", default=0))
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# Redelivery over loss: a task is acknowledged only once it has finished, and a worker that
# dies mid-task hands it back to the broker. Every task is idempotent, so a repeat is safe.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Redis redelivers an unacknowledged task after the visibility timeout. It must be longer
# than the longest task's hard time limit plus its longest retry countdown (see pharmacy.tasks),
# or a slow but healthy task would run twice; one hour leaves ample margin.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    # How often a worker sweeps for messages past their visibility
    # timeout (kombu's period is interval × throttle, 100 s by default). Tests set both to 1.
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10),
    "unacked_restore_throttle": env.int("CELERY_UNACKED_RESTORE_THROTTLE", default=10),
}
CELERY_TASK_DEFAULT_QUEUE = "default"
# One queue per kind of work, so a slow partner cannot starve the rest; the first matching
# pattern wins. Keep tests/processes.py QUEUES and scripts/demo.py's worker -Q lists in step.
CELERY_TASK_ROUTES = {
    "events.tasks.webhook_*": {"queue": "webhooks"},
    "notifications.tasks.*": {"queue": "notifications"},
    "pharmacy.tasks.gateway_cancellation_*": {"queue": "dispatch"},
    "events.tasks.*": {"queue": "events"},
    "prescriptions.tasks.prescription_check": {"queue": "checks"},
    "prescriptions.tasks.*": {"queue": "default"},
    "billing.tasks.*": {"queue": "payments"},
    "pharmacy.tasks.dispatch_*": {"queue": "dispatch"},
}
CELERY_QUEUES_ALL = "default,events,checks,payments,dispatch,webhooks,notifications"
# On RabbitMQ every task queue is a quorum queue (replicated and durable; Celery then uses
# per-consumer QoS and RabbitMQ's native delayed delivery for countdowns), and each publish waits
# for the broker's confirmation. Redis keeps the visibility-timeout options above.
CELERY_BROKER_IS_AMQP = CELERY_BROKER_URL.split("://", 1)[0] in {"amqp", "amqps", "pyamqp"}
if CELERY_BROKER_IS_AMQP:
    CELERY_TASK_DEFAULT_QUEUE_TYPE = "quorum"
    CELERY_TASK_CREATE_MISSING_QUEUE_TYPE = "quorum"
    # Native delayed delivery routes through topic exchanges; on a direct one a countdown
    # would hold a worker until it is due.
    CELERY_TASK_DEFAULT_EXCHANGE_TYPE = "topic"
    CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE = "topic"
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# Workers keep their database connection between tasks as web processes do between requests:
# Django's close_old_connections runs before and after each task (config/celery.py), closing a
# connection that broke or outlived DATABASE_CONN_MAX_AGE, instead of Celery's close after every
# task (which costs a connect and the system-scope query per task). Celery still closes it every
# CELERY_DB_REUSE_MAX tasks; 0 restores the close after every task.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_TASK_TIME_LIMIT = 120
CELERY_TASK_SOFT_TIME_LIMIT = 90
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    # The relay: unpublished events, and owed tasks that are due (retries, expired leases).
    "outbox-relay": {"task": "events.tasks.outbox_relay", "schedule": 2.0},
    "idempotency-keys-purge": {"task": "accounts.tasks.idempotency_keys_purge", "schedule": 3600.0},
    # The reconciler (saga.reconciler): re-enqueue work whose broker message was lost.
    "stuck-work-reconcile": {
        "task": "events.tasks.stuck_work_reconcile",
        "schedule": env.float("RECONCILE_BEAT_SECONDS", default=60.0),
    },
    # Orders the gateway went quiet about: ask where they are (pharmacy.services.orders_poll_stale).
    "orders-poll-stale": {
        "task": "pharmacy.tasks.orders_poll_stale",
        "schedule": env.float("ORDER_POLL_BEAT_SECONDS", default=300.0),
    },
    # Partners' stock CSV files (pharmacy.services.partner_stock_pull_all).
    "partner-stock-pull": {
        "task": "pharmacy.tasks.partner_stock_pull_all",
        "schedule": env.float("PARTNER_STOCK_PULL_BEAT_SECONDS", default=600.0),
    },
    # Orders at partners that report status only when asked (status_by=polling).
    "partner-orders-poll": {
        "task": "pharmacy.tasks.partner_orders_poll",
        "schedule": env.float("PARTNER_POLL_BEAT_SECONDS", default=60.0),
    },
    # Held prescriptions (a start date in the future): send the ones now due to the pharmacy.
    "held-prescriptions-release": {
        "task": "pharmacy.tasks.held_prescriptions_release",
        "schedule": env.float("HELD_RELEASE_BEAT_SECONDS", default=900.0),
    },
    # Repeats: issue the repeat prescriptions that are due.
    "repeat-series-issue-due": {
        "task": "prescriptions.tasks.repeat_series_issue_due",
        "schedule": env.float("REPEAT_SERIES_BEAT_SECONDS", default=3600.0),
    },
}
# How long work may sit untouched before the reconciler re-enqueues it.
# The dispatch value must exceed GATEWAY_RETRY_BACKOFF_MAX_SECONDS, so a send that is only
# waiting out its retry countdown is not started a second time (which would be harmless —
# one idempotency key, guarded updates — but wasteful).
RECONCILE_STALE_SECONDS = env.int("RECONCILE_STALE_SECONDS", default=300)
RECONCILE_DISPATCH_STALE_SECONDS = env.int("RECONCILE_DISPATCH_STALE_SECONDS", default=900)
RECONCILE_BATCH_SIZE = env.int("RECONCILE_BATCH_SIZE", default=500)
# Publish each transaction's events straight after commit; the beat relay is the safety net.
OUTBOX_PUBLISH_ON_COMMIT = env.bool("OUTBOX_PUBLISH_ON_COMMIT", default=True)
# A worker writes its task statistics (support.metrics) at most this often, and when it stops.
TASK_STATISTICS_FLUSH_SECONDS = env.float("TASK_STATISTICS_FLUSH_SECONDS", default=5.0)
# An owed task (events.OutboxTask) is published again this long after its last publication
# unless it finished or set its next retry, and so is a published event to each consumer that
# has not processed it: longer than the hard time limit of every task run that way (40 s),
# short enough that a killed worker's work resumes within a minute.
OUTBOX_TASK_LEASE_SECONDS = env.int("OUTBOX_TASK_LEASE_SECONDS", default=45)
# How many times the relay republishes an event on lease expiry; the reconciler
# (RECONCILE_STALE_SECONDS) keeps sending a consumer that still fails after that.
OUTBOX_EVENT_REPUBLISH_LIMIT = env.int("OUTBOX_EVENT_REPUBLISH_LIMIT", default=5)
# Which consumer (a Celery task) reacts to which event: the prescription journey, defined once
# in saga/journey.py. The outbox relay publishes one task per (event, consumer) pair.
EVENT_CONSUMERS = journey.EVENT_CONSUMERS
EVENT_CONSUMER_IDLE_WHEN = journey.CONSUMER_IDLE_WHEN

# --- API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ClinicOAuth2Authentication"],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.authentication.IsClinicClient"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.BoundedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.problems.exception_handler",
    "UNAUTHENTICATED_USER": None,
    # Per machine client (accounts.throttling.ClientRateThrottle): 429 with Retry-After.
    "DEFAULT_THROTTLE_CLASSES": ["accounts.throttling.ClientRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "client": env.str("API_RATE_LIMIT", default="1200/minute"),
        # Per address (accounts.budgets): token requests, and requests with a token not valid.
        "token": env.str("TOKEN_RATE_LIMIT", default="60/minute"),
        "invalid_token": env.str("INVALID_TOKEN_RATE_LIMIT", default="30/minute"),
    },
}
# The throttle counts live in the cache: shared (Redis) outside local mode, so a rate limit is
# not multiplied by the number of processes (config/checks.py refuses a per-process cache).
CACHES = {"default": env.cache_url_config(_deployment("CACHE_URL"))}
SPECTACULAR_SETTINGS = {
    "TITLE": "Scriptline API",
    "DESCRIPTION": (
        "E-prescriptions from partner clinics to the pharmacy. Authenticate with OAuth2 "
        "client credentials at POST /oauth/token/. POST requests need an Idempotency-Key "
        "header; keys are kept for 24 hours. Errors are RFC 9457 problem+json."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI assets are served from this app, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation documents its problem+json error responses (api/openapi.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.openapi.problem_responses",
    ],
}
IDEMPOTENCY_KEY_TTL = timedelta(hours=env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24))

OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
OAUTH2_PROVIDER = {
    # Short-lived: a leaked token is useful for minutes; clients fetch a new one as needed.
    "ACCESS_TOKEN_EXPIRE_SECONDS": env.int("ACCESS_TOKEN_EXPIRE_SECONDS", default=600),
    "OAUTH2_VALIDATOR_CLASS": "accounts.authentication.ClinicOAuth2Validator",
    "SCOPES": {
        "patients:read": "Read patients",
        "patients:write": "Register patients",
        "prescriptions:read": "Read prescriptions",
        "prescriptions:write": "Submit and cancel prescriptions",
    },
    "DEFAULT_SCOPES": ["patients:read", "patients:write", "prescriptions:read", "prescriptions:write"],
    "PKCE_REQUIRED": True,
    # RFC 9700 (OAuth 2.0 Security BCP). Only client credentials are used by the clinics.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    # Tokens are stored as their SHA-256 only (RFC 9700 §4): a copy of the table authenticates
    # nothing. Requests are looked up by that checksum.
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
}

# --- Hardening: HTTPS, cookies, sessions, headers --------------------------------------------
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not _LOCAL)
SECURE_REDIRECT_EXEMPT = [r"^health/$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if _LOCAL else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = not _LOCAL
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = not _LOCAL
SESSION_COOKIE_HTTPONLY = True
# Staff sessions expire after a working day and when the browser closes.
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
X_FRAME_OPTIONS = "DENY"
ADMIN_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)

# --- Pharmacy gateway --------------------------------------------------------------------------
GATEWAY_URL = _deployment("GATEWAY_URL")
GATEWAY_API_KEY = _deployment("GATEWAY_API_KEY")
GATEWAY_WEBHOOK_SECRET = _deployment("GATEWAY_WEBHOOK_SECRET")
GATEWAY_TIMEOUT_SECONDS = env.float("GATEWAY_TIMEOUT_SECONDS", default=10.0)
# Transient failures (5xx, 429, timeouts) are retried for GATEWAY_RETRY_WINDOW_SECONDS, then
# dead-lettered; GATEWAY_MAX_ATTEMPTS > 0 also caps the attempts (0: the window alone decides).
GATEWAY_RETRY_WINDOW_SECONDS = env.int("GATEWAY_RETRY_WINDOW_SECONDS", default=24 * 3600)
GATEWAY_MAX_ATTEMPTS = env.int("GATEWAY_MAX_ATTEMPTS", default=0)
# The gateway's circuit breaker: this many transient failures in a row open it for
# GATEWAY_CIRCUIT_OPEN_SECONDS, doubling each time it opens again up to the maximum.
GATEWAY_CIRCUIT_FAILURES = env.int("GATEWAY_CIRCUIT_FAILURES", default=5)
GATEWAY_CIRCUIT_OPEN_SECONDS = env.float("GATEWAY_CIRCUIT_OPEN_SECONDS", default=30.0)
GATEWAY_CIRCUIT_OPEN_MAX_SECONDS = env.float("GATEWAY_CIRCUIT_OPEN_MAX_SECONDS", default=600.0)
GATEWAY_RETRY_BACKOFF_SECONDS = env.float("GATEWAY_RETRY_BACKOFF_SECONDS", default=2.0)
GATEWAY_RETRY_BACKOFF_MAX_SECONDS = env.float("GATEWAY_RETRY_BACKOFF_MAX_SECONDS", default=600.0)
# An acknowledged, dispensed or shipped order that has not moved for ORDER_POLL_AFTER_SECONDS
# is asked about at the gateway (at most once per ORDER_POLL_INTERVAL_SECONDS) and its answer
# applied; one still quiet after ORDER_ESCALATE_AFTER_SECONDS is raised to the operators.
ORDER_POLL_AFTER_SECONDS = env.int("ORDER_POLL_AFTER_SECONDS", default=6 * 3600)
ORDER_POLL_INTERVAL_SECONDS = env.int("ORDER_POLL_INTERVAL_SECONDS", default=3600)
ORDER_ESCALATE_AFTER_SECONDS = env.int("ORDER_ESCALATE_AFTER_SECONDS", default=3 * 24 * 3600)
GATEWAY_WEBHOOK_TOLERANCE_SECONDS = env.int("GATEWAY_WEBHOOK_TOLERANCE_SECONDS", default=300)
PHARMACY_ODS_CODE = env.str("PHARMACY_ODS_CODE", default="FSC01")

# --- Pharmacy partners and routing (pharmacy.routing) ------------------------------------------
# Each partner's API key and webhook secret, and its URL when its row has none, by partner code:
# PARTNER_SECRETS='{"acme": {"url": "https://...", "api_key": "...", "webhook_secret": "..."}}'.
# The default partner ("gateway") uses GATEWAY_*. In local mode a partner missing here gets its
# simulator's keys; outside it, a partner without keys is never routed to (fail closed).
PARTNER_SECRETS = env.json("PARTNER_SECRETS", default={})
if not isinstance(PARTNER_SECRETS, dict) or not all(
    isinstance(value, dict) and all(isinstance(item, str) for item in value.values())
    for value in PARTNER_SECRETS.values()
):
    raise ImproperlyConfigured("PARTNER_SECRETS must map each partner code to an object of strings")
PARTNER_SIMULATOR_KEYS = _LOCAL
MAILORDER_SIMULATOR_API_KEY = "sim-mailorder-key"
# Stock levels older than this count as unknown: such a partner stays eligible, ranked after
# those whose stock is known.
PARTNER_STOCK_MAX_AGE_SECONDS = env.int("PARTNER_STOCK_MAX_AGE_SECONDS", default=6 * 3600)
PARTNER_STOCK_WEBHOOK_TOLERANCE_SECONDS = env.int("PARTNER_STOCK_WEBHOOK_TOLERANCE_SECONDS", default=300)
# Partners whose order status is polled (status_by=polling): orders not moved for this long are asked about.
PARTNER_POLL_AFTER_SECONDS = env.int("PARTNER_POLL_AFTER_SECONDS", default=60)

# --- Billing: Stripe and NHS charges -------------------------------------------------
# The default API base is the local Stripe simulator (manage.py run_stripe_simulator); set
# STRIPE_API_BASE=https://api.stripe.com with a real secret key in production.
STRIPE_API_BASE = _deployment("STRIPE_API_BASE")
STRIPE_SECRET_KEY = _deployment("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = _deployment("STRIPE_WEBHOOK_SECRET")
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env.int("STRIPE_WEBHOOK_TOLERANCE_SECONDS", default=300)
STRIPE_TIMEOUT_SECONDS = env.float("STRIPE_TIMEOUT_SECONDS", default=10.0)
STRIPE_MAX_ATTEMPTS = env.int("STRIPE_MAX_ATTEMPTS", default=8)
# Added to every private prescription's amount, in the clinic currency's minor units.
BILLING_DISPENSING_FEE_MINOR = env.int("BILLING_DISPENSING_FEE_MINOR", default=250)

# --- Outbound clinic webhooks (events.webhooks) ----------------------------------------------
CLINIC_WEBHOOK_TIMEOUT_SECONDS = env.float("CLINIC_WEBHOOK_TIMEOUT_SECONDS", default=10.0)
CLINIC_WEBHOOK_RETRY_WINDOW_SECONDS = env.int("CLINIC_WEBHOOK_RETRY_WINDOW_SECONDS", default=24 * 3600)
CLINIC_WEBHOOK_BACKOFF_SECONDS = env.float("CLINIC_WEBHOOK_BACKOFF_SECONDS", default=10.0)
# Within the 600 s retry-countdown bound the visibility timeout is sized for (README, Celery).
CLINIC_WEBHOOK_BACKOFF_MAX_SECONDS = env.float("CLINIC_WEBHOOK_BACKOFF_MAX_SECONDS", default=600.0)
CLINIC_WEBHOOK_SECRET_GRACE_SECONDS = env.int("CLINIC_WEBHOOK_SECRET_GRACE_SECONDS", default=24 * 3600)
# Outside local mode a clinic's webhook URL is https and resolves to public addresses only
# (events.adapters.http.webhook_target_refusal); local receivers listen on 127.0.0.1.
CLINIC_WEBHOOK_REQUIRE_HTTPS = not _LOCAL
CLINIC_WEBHOOK_ALLOW_PRIVATE_TARGETS = _LOCAL

# --- Patient notifications: email through EMAIL_BACKEND, SMS through SMS_BACKEND ---------------
# SMS_BACKEND is a dotted path to a notifications.sms.SmsBackend; the console default logs only
# "SMS sent to patient #id". The dummy email default keeps patient addresses and names off
# consoles and disks; set EMAIL_BACKEND (and EMAIL_HOST etc.) for a real mail server. Tests use
# locmem.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.dummy.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
SMS_BACKEND = env.str("SMS_BACKEND", default="notifications.sms.ConsoleSmsBackend")
NOTIFICATION_FROM_EMAIL = env.str("NOTIFICATION_FROM_EMAIL", default="Scriptline <no-reply@scriptline.test>")

# --- Staff accounts: roles, object permissions, 2FA, lockout (support/, audit/) --------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: counts failures and refuses locked accounts
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",  # per-clinic assignments (support.services)
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row; anonymous users get nothing
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=30))
# A username from one address locks: a guesser cannot lock a colleague out from the same office
# (nor by naming them from elsewhere), and one user's success resets only their own count.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"
AXES_ENABLE_ACCESS_FAILURE_LOG = True
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Scriptline")
# A TOTP key is shown once, at enrolment; the back office never shows it (support.admin).
OTP_ADMIN_HIDE_SENSITIVE_DATA = True
# Audit (django-auditlog): the request id is the correlation id; PHI values are never stored.
AUDITLOG_CID_GETTER = "common.logs.request_id_current"
AUDITLOG_MASK_CALLABLE = "audit.registry.redacted"

# --- The rest --------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=1_048_576)

# Structured JSON logs with a request id; patient identifiers are redacted (common/logs.py).
LOGGING = logs.logging_config(env.str("LOG_LEVEL", default="INFO"))
logs.structlog_configure()
# Let Django's LOGGING (JSON, redaction) apply inside Celery workers too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False


# --- Back office: support console, operator dashboard, metrics, patient status link ----------
def _number_table(name: str, defaults: dict[str, float]) -> dict[str, float]:
    """`NAME=key=value,key=value` over the defaults; an unknown key stops the process."""
    given = env.dict(name, default={})
    unknown = set(given) - set(defaults)
    if unknown:
        raise RuntimeError(f"{name}: unknown keys {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **{key: float(value) for key, value in given.items()}}


# Hours from opening an enquiry to its due time, per category (support.models.Enquiry.Category).
SUPPORT_ENQUIRY_SLA_HOURS = _number_table(
    "SUPPORT_ENQUIRY_SLA_HOURS",
    {"where_is_my_order": 24, "payment": 24, "side_effects": 2, "complaint": 48, "other": 48},
)
# A passed identity check opens the patient page for this long, in that staff session only;
# this many failed checks on one patient lock that staff member out of it for an hour.
SUPPORT_IDENTITY_CHECK_MINUTES = env.int("SUPPORT_IDENTITY_CHECK_MINUTES", default=30)
SUPPORT_IDENTITY_CHECK_ATTEMPTS = env.int("SUPPORT_IDENTITY_CHECK_ATTEMPTS", default=5)
# A dashboard tile turns red when its figure exceeds its threshold (support.dashboard).
DASHBOARD_THRESHOLDS = _number_table(
    "DASHBOARD_THRESHOLDS",
    {
        "dead_letters": 0,
        "oldest_dead_letter_minutes": 0,
        "oldest_awaiting_pharmacist_minutes": 120,
        "failing_webhooks": 0,
        "stuck_work": 0,
        "queue_depth": 500,
        "overdue_enquiries": 0,
        "stage_p95_minutes": 240,
        "open_order_alerts": 0,
    },
)
DASHBOARD_REFRESH_SECONDS = env.int("DASHBOARD_REFRESH_SECONDS", default=15)
# GET /metrics (Prometheus) answers only `Authorization: Bearer <METRICS_TOKEN>`.
METRICS_TOKEN = _deployment("METRICS_TOKEN")
PUBLIC_BASE_URL = _deployment("PUBLIC_BASE_URL")
# The patient status link (/track/<token>/): signed with SECRET_KEY and this salt, valid for
# STATUS_LINK_MAX_AGE_DAYS after the prescription was created, and rate-limited per address.
STATUS_LINK_SALT = env.str("STATUS_LINK_SALT", default="scriptline.status-link")
STATUS_LINK_MAX_AGE_DAYS = env.int("STATUS_LINK_MAX_AGE_DAYS", default=60)
STATUS_LINK_RATE_PER_MINUTE = env.int("STATUS_LINK_RATE_PER_MINUTE", default=30)
# `manage.py events_archive` moves a finished prescription's events out of the event log only
# once its last event is older than this (README, "Growth of the event and audit tables").
EVENTS_RETENTION_DAYS = env.int("EVENTS_RETENTION_DAYS", default=730)
# How shipped prescriptions travel, for the plain-language status (prescriptions.plain_status).
SHIPPING_CARRIER = env.str("SHIPPING_CARRIER", default="Royal Mail")
SHIPPING_TRACKING_URL = env.str(
    "SHIPPING_TRACKING_URL",
    default="https://www.royalmail.com/track-your-item#/tracking-results/{tracking_number}",
)
