from django.apps import AppConfig


class SagaConfig(AppConfig):
    """The prescription journey across the domain apps: which consumer reacts to which event,
    cross-app orchestrations (cancel with compensation) and the reconciler. No models."""

    name = "saga"
