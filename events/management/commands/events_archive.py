"""`manage.py events_archive --before YYYY-MM-DD [--execute]`: move finished prescriptions'
events older than a date from the event log to its archive (events.archive).

Without --execute it only reports what it would move. A --before later than
EVENTS_RETENTION_DAYS ago is refused, with or without --execute.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.tenancy import system_scope
from events.archive import journeys_archive, journeys_finished_before, journeys_referenced

BATCH = 1000


class Command(BaseCommand):
    help = (
        "Move the events of prescriptions delivered, cancelled or rejected before --before to "
        "events_event_archive (a dry run unless --execute; never younger than EVENTS_RETENTION_DAYS)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--before", required=True, help="YYYY-MM-DD: journeys whose last event is older")
        parser.add_argument("--execute", action="store_true", help="move them (default: only count)")
        parser.add_argument("--batch", type=int, default=BATCH, help="journeys per transaction")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            day = date.fromisoformat(options["before"])
        except ValueError as error:
            raise CommandError("--before must be a date, YYYY-MM-DD") from error
        cutoff = datetime.combine(day, time.min, tzinfo=UTC)
        latest_allowed = timezone.now() - timedelta(days=settings.EVENTS_RETENTION_DAYS)
        if cutoff > latest_allowed:
            raise CommandError(
                f"--before {day} is inside the retention period ({settings.EVENTS_RETENTION_DAYS} days, "
                f"EVENTS_RETENTION_DAYS): the latest allowed is {latest_allowed.date()}"
            )
        batch: int = options["batch"]
        if batch < 1:
            raise CommandError("--batch must be at least 1")
        with system_scope(reason="events_archive: finished journeys to the archive"):
            if not options["execute"]:
                self._dry_run(cutoff, batch)
                return
            journeys = events = held = after = 0
            while True:
                result = journeys_archive(cutoff=cutoff, limit=batch, after=after)
                journeys, events, held = (
                    journeys + result.journeys,
                    events + result.events,
                    held + result.held,
                )
                if not result.last_id:
                    break
                after = result.last_id
            self.stdout.write(
                f"archived {events} events of {journeys} journeys finished before {day}; "
                f"{held} kept in the log (a notification, webhook delivery or unsettled "
                "outbox row refers to them)"
            )

    def _dry_run(self, cutoff: datetime, batch: int) -> None:
        candidates = journeys_finished_before(cutoff, limit=batch)
        held = journeys_referenced(candidates)
        self.stdout.write(
            f"dry run (nothing moved; add --execute): of the first {len(candidates)} journeys "
            f"finished before {cutoff.date()}, {len(candidates) - len(held)} would move, "
            f"{len(held)} stay (referenced)"
        )
