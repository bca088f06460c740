from django.apps import AppConfig
from django.db.backends.signals import connection_created


class AccountsConfig(AppConfig):
    """Who is calling and what they may see: clinic API authentication, tenancy (row-level
    security), rate limits and idempotency keys. No models of its own: it works on
    patients.Clinic, patients.ClinicClient and patients.IdempotencyKey."""

    name = "accounts"

    def ready(self) -> None:
        from accounts import schema  # noqa: F401  (registers the OpenAPI security scheme)
        from accounts.tenancy import system_scope_install

        connection_created.connect(system_scope_install, dispatch_uid="accounts.system_scope")
