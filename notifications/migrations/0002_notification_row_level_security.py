"""Row-level security on notifications (the pattern of patients/0004)."""

from importlib import import_module

from django.db import migrations

rls = import_module("patients.migrations.0004_row_level_security")

TABLES = {
    "notifications_notification": "EXISTS (SELECT 1 FROM patients_patient p WHERE p.id = patient_id)",
}


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0001_notifications_once_per_event_and_channel"),
        ("patients", "0004_row_level_security"),
    ]

    operations = [
        migrations.RunSQL(rls._enable(table, condition), rls._disable(table)) for table, condition in TABLES.items()
    ]
