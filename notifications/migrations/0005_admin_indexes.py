"""Indexes for the admin's filters, orderings and searches, built without locking writes."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('events', '0008_admin_indexes'),
        ('notifications', '0004_notification_resend_claimed_at'),
        ('patients', '0013_merge_20261130_1250'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='notification',
            index=models.Index(fields=['kind'], name='notification_kind'),
        ),
    ]
