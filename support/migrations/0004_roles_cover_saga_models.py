from importlib import import_module

from django.db import migrations

roles_migration = import_module("support.migrations.0002_staff_roles")


class Migration(migrations.Migration):
    """Re-synchronise the role groups once the webhook, notification, cancellation and repeat
    models exist (support/roles.py lists their permissions)."""

    dependencies = [
        ("support", "0003_delete_staffprofile"),
        ("events", "0004_clinic_webhook_row_level_security"),
        ("notifications", "0002_notification_row_level_security"),
        ("pharmacy", "0003_gateway_cancellation_row_level_security"),
        ("prescriptions", "0007_repeat_series_row_level_security"),
    ]

    operations = [migrations.RunPython(roles_migration.roles_synchronise, migrations.RunPython.noop)]
