"""Indexes for the admin's filters, orderings and searches, built without locking writes."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('audit', '0004_patient_access_mcp_channel'),
        ('patients', '0013_merge_20261130_1250'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='patientaccess',
            index=models.Index(fields=['clinic', '-id'], name='patient_access_clinic_newest'),
        ),
        AddIndexConcurrently(
            model_name='patientaccess',
            index=models.Index(fields=['client_id'], name='patient_access_client_id'),
        ),
        AddIndexConcurrently(
            model_name='patientaccess',
            index=models.Index(fields=['request_id'], name='patient_access_request_id'),
        ),
    ]
