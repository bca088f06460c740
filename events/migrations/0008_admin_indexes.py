"""Indexes for the admin's filters, orderings and searches, built without locking writes."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('events', '0007_reasons_out_of_event_payloads'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='event',
            index=models.Index(fields=['aggregate_id'], name='event_aggregate_id'),
        ),
        AddIndexConcurrently(
            model_name='webhookdelivery',
            index=models.Index(fields=['aggregate_id', 'sequence'], name='webhook_delivery_order'),
        ),
    ]
