"""Row-level security on repeat series (the pattern of patients/0004)."""

from importlib import import_module

from django.db import migrations

rls = import_module("patients.migrations.0004_row_level_security")

TABLES = {
    "prescriptions_repeatseries": "EXISTS (SELECT 1 FROM prescriptions_prescription p WHERE p.id = origin_id)",
}


class Migration(migrations.Migration):
    dependencies = [
        ("prescriptions", "0006_repeat_series_and_prescription_links"),
        ("patients", "0004_row_level_security"),
    ]

    operations = [
        migrations.RunSQL(rls._enable(table, condition), rls._disable(table)) for table, condition in TABLES.items()
    ]
