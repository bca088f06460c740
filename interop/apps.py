from django.apps import AppConfig


class InteropConfig(AppConfig):
    """Other systems' languages in and out: the FHIR R4 message intake and read API."""

    name = "interop"
