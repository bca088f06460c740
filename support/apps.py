from django.apps import AppConfig


class SupportConfig(AppConfig):
    """Support staff's tools: patient queries, prescription timelines."""

    name = "support"
