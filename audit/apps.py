from django.apps import AppConfig


class AuditConfig(AppConfig):
    """Who changed and who read what: django-auditlog on sensitive models, and patient access."""

    name = "audit"

    def ready(self) -> None:
        from audit import registry

        registry.audit_register()
