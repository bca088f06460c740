from typing import Any

from django.core.management.base import BaseCommand

from accounts.tenancy import system_scope
from patients.services import patient_keys_rotate
from support.enquiries import support_keys_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt patient identifiers (and support notes) under the first PHI_ENCRYPTION_KEYS entry and recompute "
        "the blind indexes under BLIND_INDEX_KEY. Safe to stop and run again."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        with system_scope(reason="rotate_keys"):
            rotated = patient_keys_rotate()
            support_rows = support_keys_rotate()
        self.stdout.write(f"re-encrypted {rotated} patient(s) and {support_rows} support record(s)")
