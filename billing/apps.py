from django.apps import AppConfig


class BillingConfig(AppConfig):
    """Payments, refunds and NHS claims: the Stripe and NHS flows land here."""

    name = "billing"
