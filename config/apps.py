from django.apps import AppConfig


class DeployChecksConfig(AppConfig):
    """The project-wide `check --deploy` checks (config/checks.py)."""

    name = "config"
    label = "scriptline_config"
    verbose_name = "Scriptline configuration"

    def ready(self) -> None:
        from config import checks  # noqa: F401  (registers the checks)
