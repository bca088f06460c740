"""Run the Stripe simulator (sandbox/stripe.py)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from sandbox import stripe as simulator


class Command(BaseCommand):
    help = "Run the Stripe simulator HTTP server until SIGTERM or SIGINT."
    # The simulator touches neither models nor the database.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        simulator.add_arguments(
            parser,
            preferred_defaults={
                "api_key": getattr(settings, "STRIPE_SECRET_KEY", None),
                "webhook_secret": getattr(settings, "STRIPE_WEBHOOK_SECRET", None),
            },
        )

    def handle(self, *args: Any, **options: Any) -> None:
        simulator.serve(**simulator.options_from(options))
