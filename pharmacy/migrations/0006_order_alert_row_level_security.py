"""Row-level security on order alerts (the pattern of patients/0004): an alert belongs to its
dispatch, so a clinic sees only its own."""

from importlib import import_module

from django.db import migrations

rls = import_module("patients.migrations.0004_row_level_security")

TABLES = {
    "pharmacy_orderalert": "EXISTS (SELECT 1 FROM pharmacy_dispatch d WHERE d.id = dispatch_id)",
}


class Migration(migrations.Migration):
    dependencies = [
        ("pharmacy", "0005_retry_window_and_partner_circuit"),
        ("patients", "0004_row_level_security"),
    ]

    operations = [
        migrations.RunSQL(rls._enable(table, condition), rls._disable(table)) for table, condition in TABLES.items()
    ]
