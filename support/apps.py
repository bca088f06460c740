from django.apps import AppConfig


class SupportConfig(AppConfig):
    """Support staff's tools and staff accounts: roles, clinic assignments, 2FA enrolment."""

    name = "support"
