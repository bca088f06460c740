"""Indexes for the admin's filters, orderings and searches, built without locking writes."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('pharmacy', '0008_gateway_event_reason_out_of_payload'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='gatewaywebhookevent',
            index=models.Index(fields=['type'], name='gateway_webhook_event_type'),
        ),
    ]
