from django.apps import AppConfig


class SupportConfig(AppConfig):
    """The back office: staff roles, clinic assignments and 2FA enrolment, the support console,
    the operator dashboard and the metrics endpoint."""

    name = "support"
    verbose_name = "Support"

    def ready(self) -> None:
        from support.metrics import task_metrics_connect

        # Celery's task signals fire only inside workers; connecting them elsewhere is harmless.
        task_metrics_connect()
