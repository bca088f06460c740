"""Build (or top up) a month's NHS claim batch: `manage.py nhs_claim_build 2026-11`."""

from datetime import date

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.services import nhs


class Command(BaseCommand):
    help = "Build a month's NHS claim (idempotent: building again adds only new items)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("month", help="YYYY-MM")

    def handle(self, *args: object, **options: str) -> None:
        try:
            year, month = (int(part) for part in options["month"].split("-"))
            first_day = date(year, month, 1)
        except ValueError as error:
            raise CommandError("give the month as YYYY-MM") from error
        batch = nhs.claim_batch_build(month=first_day)
        totals = nhs.claim_batch_totals(batch_id=batch.pk)
        self.stdout.write(
            f"{batch}: {totals['items']} items, {totals['exempt_items']} exempt, "
            f"{totals['charges_collected_minor']} pence collected ({batch.status})"
        )
