"""Row-level security on billing's clinic-owned tables (the pattern of patients/0004)."""

from importlib import import_module

from django.db import migrations

rls = import_module("patients.migrations.0004_row_level_security")

TABLES = {
    "billing_payment": "clinic_id = app_clinic_id()",
    "billing_refund": "EXISTS (SELECT 1 FROM billing_payment p WHERE p.id = payment_id)",
    "billing_cancellationrequest": "clinic_id = app_clinic_id()",
    "billing_nhscharge": "clinic_id = app_clinic_id()",
    "billing_claimitem": "clinic_id = app_clinic_id()",
}


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_seed_england_nhs_charge_rates"),
        ("patients", "0004_row_level_security"),
    ]

    operations = [
        migrations.RunSQL(rls._enable(table, condition), rls._disable(table)) for table, condition in TABLES.items()
    ]
