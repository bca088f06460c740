from django.utils import timezone

from patients.models import IdempotencyKey


def idempotency_keys_purge() -> int:
    """Delete the Idempotency-Key records past their time to live; returns how many."""
    deleted, _ = IdempotencyKey.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
