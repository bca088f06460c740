"""Indexes for the admin's filters, orderings and searches, built without locking writes."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('billing', '0005_cancellation_reason_encrypted'),
        ('patients', '0013_merge_20261130_1250'),
        ('prescriptions', '0012_merge_20261130_1310'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='cancellationrequest',
            index=models.Index(fields=['status_when_requested'], name='cancellation_request_status'),
        ),
        AddIndexConcurrently(
            model_name='nhscharge',
            index=models.Index(fields=['exemption_category'], name='nhs_charge_exemption'),
        ),
        AddIndexConcurrently(
            model_name='nhscharge',
            index=models.Index(fields=['recorded_at'], name='nhs_charge_recorded_at'),
        ),
        AddIndexConcurrently(
            model_name='payment',
            index=models.Index(fields=['clinic', '-id'], name='payment_clinic_newest'),
        ),
        AddIndexConcurrently(
            model_name='payment',
            index=models.Index(fields=['currency'], name='payment_currency'),
        ),
        AddIndexConcurrently(
            model_name='payment',
            index=models.Index(fields=['created_at'], name='payment_created_at'),
        ),
        AddIndexConcurrently(
            model_name='stripeevent',
            index=models.Index(fields=['type'], name='stripe_event_type'),
        ),
    ]
