"""Row-level security on the clinic webhook tables (the pattern of patients/0004)."""

from importlib import import_module

from django.db import migrations

rls = import_module("patients.migrations.0004_row_level_security")

TABLES = {
    "events_clinicwebhookendpoint": "clinic_id = app_clinic_id()",
    "events_webhookdelivery": (
        "EXISTS (SELECT 1 FROM events_clinicwebhookendpoint e WHERE e.id = endpoint_id)"
    ),
    "events_webhookattempt": "EXISTS (SELECT 1 FROM events_webhookdelivery d WHERE d.id = delivery_id)",
}


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0003_clinic_webhook_endpoints_and_deliveries"),
        ("patients", "0004_row_level_security"),
    ]

    operations = [
        migrations.RunSQL(rls._enable(table, condition), rls._disable(table)) for table, condition in TABLES.items()
    ]
