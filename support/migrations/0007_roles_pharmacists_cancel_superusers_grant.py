from importlib import import_module

from django.db import migrations

roles_migration = import_module("support.migrations.0002_staff_roles")


class Migration(migrations.Migration):
    """Re-synchronise the role groups: pharmacists alone cancel with compensation; pharmacist
    registrations and TOTP devices are no longer added or changed by the admin role."""

    dependencies = [
        ("support", "0006_support_tables_row_level_security"),
        ("prescriptions", "0009_prescription_cancel_permission"),
    ]

    operations = [migrations.RunPython(roles_migration.roles_synchronise, migrations.RunPython.noop)]
