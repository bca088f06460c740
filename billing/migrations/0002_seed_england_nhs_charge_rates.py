"""England's NHS prescription charge per item, as data (finance adds each April's row).

Figures to verify against the Department of Health and Social Care's announcement for each
year (published on GOV.UK / NHSBSA "NHS prescription charges"): £9.65 from 1 April 2023,
£9.90 from 1 May 2024 (frozen for 2025-26). The 2026-04-01 row carries the 2025 figure as a
placeholder until the 2026-27 rate is confirmed; change it in the admin if it differs.
"""

from datetime import date

from django.db import migrations

RATES = [
    (date(2023, 4, 1), 965, "DHSC: NHS prescription charge from 1 April 2023 (verify)"),
    (date(2024, 5, 1), 990, "DHSC: NHS prescription charge from 1 May 2024, frozen for 2025-26 (verify)"),
    (date(2026, 4, 1), 990, "PLACEHOLDER: 2026-27 England rate not yet confirmed here; verify on GOV.UK"),
]


def seed(apps, schema_editor):
    NhsChargeRate = apps.get_model("billing", "NhsChargeRate")
    for effective_from, amount_minor, source in RATES:
        NhsChargeRate.objects.get_or_create(
            effective_from=effective_from, defaults={"amount_minor": amount_minor, "source": source}
        )


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_payments_refunds_nhs_claims")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
