from django.apps import AppConfig
from django.db.backends.signals import connection_created


class PatientsConfig(AppConfig):
    name = "patients"
    verbose_name = "Clinics and patients"

    def ready(self) -> None:
        from patients import schema  # noqa: F401  (registers the OpenAPI security scheme)
        from patients.tenancy import system_scope_install

        connection_created.connect(system_scope_install, dispatch_uid="patients.system_scope")
