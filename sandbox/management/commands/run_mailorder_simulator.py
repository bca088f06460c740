"""Run the mail-order pharmacy simulator (sandbox/mailorder.py)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from sandbox import mailorder as simulator


class Command(BaseCommand):
    help = "Run the mail-order pharmacy simulator HTTP server until SIGTERM or SIGINT."
    # The simulator touches neither models nor the database.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        simulator.add_arguments(
            parser, preferred_defaults={"api_key": getattr(settings, "MAILORDER_API_KEY", None)}
        )

    def handle(self, *args: Any, **options: Any) -> None:
        simulator.serve(**simulator.options_from(options))
