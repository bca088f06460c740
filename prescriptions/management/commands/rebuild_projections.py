from django.core.management.base import BaseCommand, CommandParser

from prescriptions.projections import projection_repair, projections_rebuild


class Command(BaseCommand):
    help = (
        "Rebuild the prescription read model (status, tracking number) from the event log and "
        "report every difference. With --fix, apply each through a guarded update that records "
        "a prescription.projection_repaired event. Exits 1 when differences remain."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fix", action="store_true", help="apply the rebuilt values")

    def handle(self, *args: object, **options: object) -> None:
        differences = projections_rebuild()
        repaired = 0
        for difference in differences:
            line = (
                f"prescription {difference.prescription_id} {difference.field}: "
                f"stored {difference.stored!r}, events say {difference.rebuilt!r}"
            )
            if options["fix"] and projection_repair(difference=difference, actor="rebuild_projections"):
                repaired += 1
                line += " (fixed)"
            self.stdout.write(line)
        self.stdout.write(f"{len(differences)} difference(s), {repaired} fixed")
        if len(differences) > repaired:
            raise SystemExit(1)
