"""Enrol a staff member's authenticator app: prints the otpauth:// URI to scan or type in."""

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from support.services import staff_totp_enrol


class Command(BaseCommand):
    help = "Give a staff user a new TOTP device (replacing any old one) and print its provisioning URI."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: object, **options: str) -> None:
        user = User.objects.filter(username=options["username"], is_staff=True).first()
        if user is None:
            raise CommandError(f"No staff user {options['username']!r}.")
        device = staff_totp_enrol(user=user)
        self.stdout.write(device.config_url)
