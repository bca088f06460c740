from importlib import import_module

from django.db import migrations

roles_migration = import_module("support.migrations.0002_staff_roles")


class Migration(migrations.Migration):
    """Re-synchronise the role groups: operators manage pharmacy partners, read their stock
    feeds and route waiting dispatches again."""

    dependencies = [
        ("support", "0007_roles_pharmacists_cancel_superusers_grant"),
        ('pharmacy', '0011_default_partner'),
    ]

    operations = [migrations.RunPython(roles_migration.roles_synchronise, migrations.RunPython.noop)]
