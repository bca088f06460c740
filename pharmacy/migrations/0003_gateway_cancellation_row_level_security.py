"""Row-level security on the gateway cancellation table (the pattern of patients/0004)."""

from importlib import import_module

from django.db import migrations

rls = import_module("patients.migrations.0004_row_level_security")

TABLES = {
    "pharmacy_gatewaycancellation": "EXISTS (SELECT 1 FROM pharmacy_dispatch d WHERE d.id = dispatch_id)",
}


class Migration(migrations.Migration):
    dependencies = [
        ("pharmacy", "0002_gateway_cancellation"),
        ("patients", "0004_row_level_security"),
    ]

    operations = [
        migrations.RunSQL(rls._enable(table, condition), rls._disable(table)) for table, condition in TABLES.items()
    ]
