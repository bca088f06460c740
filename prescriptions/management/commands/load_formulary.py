from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from prescriptions.formulary import FormularyError, formulary_load
from prescriptions.formulary_extract import formulary_import_extract

DEFAULT = Path(__file__).resolve().parents[2] / "data" / "formulary.json"


class Command(BaseCommand):
    help = (
        "Load the formulary (medications, interactions, allergy classes) from a data file. "
        "Idempotent: shows progress per section and reports what changed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", default=str(DEFAULT))
        parser.add_argument(
            "--extract",
            help="A dm+d-style (VPID, NM, ...) or RxNorm-style (RXCUI, STR, TTY) CSV extract of a "
            "pharmacy's catalogue: its products are added or updated after the formulary file.",
        )

    def handle(self, *args: object, **options: str) -> None:
        if options.get("extract"):
            self._extract(Path(options["extract"]))
            return
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

    def _extract(self, path: Path) -> None:
        self.stdout.write(f"importing {path} ...")
        try:
            report = formulary_import_extract(path=path, progress=lambda line: self.stdout.write(f"  {line}"))
        except (OSError, UnicodeDecodeError, FormularyError) as error:
            raise CommandError(f"cannot import the extract: {error}") from error
        counts = report["extract"]
        self.stdout.write(
            f"{report['version']}: {counts['created']} added, {counts['updated']} updated, "
            f"{counts['unchanged']} unchanged, {counts['skipped']} skipped"
        )
