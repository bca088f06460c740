import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from api.problems import problem_response
from billing.payments import WebhookInvalid
from billing.services import payments

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    """Signed PaymentIntent events from Stripe (succeeded, payment_failed, canceled)."""
    try:
        outcome = payments.stripe_webhook_receive(
            body=request.body, signature_header=request.headers.get("Stripe-Signature", "")
        )
    except WebhookInvalid as error:
        # The reason only: the body may carry metadata, never logged.
        logger.warning("stripe webhook rejected: %s", error)
        return problem_response(request, 400, "webhook-rejected", str(error))
    return JsonResponse({"outcome": outcome})
