from django.db import migrations


class Migration(migrations.Migration):
    """Registration numbers live on prescriptions.PharmacistProfile: one place for the rule."""

    dependencies = [("support", "0002_staff_roles")]

    operations = [migrations.DeleteModel(name="StaffProfile")]
