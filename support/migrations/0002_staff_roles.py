"""The staff roles as groups, each with exactly the permissions listed in support/roles.py.

Running it again (or after changing ROLE_PERMISSIONS, in a new migration calling
`roles_synchronise`) sets each group's permissions to the list: extra ones are removed.
"""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

from support.roles import ROLE_PERMISSIONS


def roles_synchronise(apps, schema_editor):
    # Permissions are normally created after `migrate` finishes; the groups need them now.
    for app_config in global_apps.get_app_configs():
        create_permissions(app_config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, dotted in ROLE_PERMISSIONS.items():
        wanted = [tuple(name.split(".", 1)) for name in dotted]
        # A model added by a later migration has no permission yet: a later migration calling
        # this again (e.g. 0004) grants it once it exists.
        permissions = [
            permission
            for app_label, codename in wanted
            for permission in Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        ]
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set(permissions)


def roles_remove(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=list(ROLE_PERMISSIONS)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("support", "0001_staff_profile"),
        ("audit", "0001_patient_access"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("prescriptions", "0004_merge_clinical_and_billing"),
        ("billing", "0003_row_level_security"),
        ("patients", "0007_row_level_security_clinical_context"),
        ("pharmacy", "0001_initial"),
        ("events", "0002_event_append_only"),
        ("oauth2_provider", "0022_refreshtoken_token_family_index"),
        ("otp_totp", "0003_add_timestamps"),
        ("axes", "0010_accessattemptexpiration"),
        ("auditlog", "0017_add_actor_email"),
    ]

    operations = [migrations.RunPython(roles_synchronise, roles_remove)]
