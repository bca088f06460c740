from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from prescriptions.formulary import formulary_load

DEFAULT = Path(__file__).resolve().parents[2] / "data" / "formulary.json"


class Command(BaseCommand):
    help = "Load the formulary from a data file (idempotent: reports what changed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", default=str(DEFAULT))

    def handle(self, *args: object, **options: str) -> None:
        try:
            report = formulary_load(path=Path(options["file"]))
        except (OSError, ValueError) as error:
            raise CommandError(f"cannot load the formulary: {error}") from error
        self.stdout.write(
            f"formulary {report['version']}: {report['created']} added, "
            f"{report['updated']} updated, {report['unchanged']} unchanged"
        )
