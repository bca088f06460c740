from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from prescriptions.formulary import FormularyError, formulary_load

DEFAULT = Path(__file__).resolve().parents[2] / "data" / "formulary.json"


class Command(BaseCommand):
    help = (
        "Load the formulary (medications, interactions, allergy classes) from a data file. "
        "Idempotent: shows progress per section and reports what changed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", default=str(DEFAULT))

    def handle(self, *args: object, **options: str) -> None:
        path = Path(options["file"])
        self.stdout.write(f"loading {path} ...")
        try:
            report = formulary_load(path=path, progress=lambda line: self.stdout.write(f"  {line}"))
        except (OSError, FormularyError) as error:
            raise CommandError(f"cannot load the formulary: {error}") from error
        medications = report["medications"]
        self.stdout.write(
            f"formulary {report['version']}: {medications['created']} added, "
            f"{medications['updated']} updated, {medications['unchanged']} unchanged, "
            f"{medications['deactivated']} deactivated"
        )
