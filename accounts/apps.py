from django.apps import AppConfig, apps
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    """Who is calling and what they may see: clinic API authentication, tenancy (row-level
    security), rate limits and idempotency keys. No models of its own: it works on
    patients.Clinic, patients.ClinicClient and patients.IdempotencyKey."""

    name = "accounts"

    def ready(self) -> None:
        from accounts import schema  # noqa: F401  (registers the OpenAPI security scheme)
        from accounts.database_roles import database_roles_on_migrate
        from accounts.tenancy import system_scope_install

        connection_created.connect(system_scope_install, dispatch_uid="accounts.system_scope")
        # The API's database roles and their allow-list, re-applied after every migrate.
        # Sent per app with models (accounts has none): patients, whose migrations set up RLS.
        post_migrate.connect(
            database_roles_on_migrate,
            sender=apps.get_app_config("patients"),
            dispatch_uid="accounts.database_roles",
        )
