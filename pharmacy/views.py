import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from api.problems import problem_response
from pharmacy import services

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def gateway_webhook(request: HttpRequest) -> JsonResponse:
    """Signed progress events from the pharmacy gateway (dispensed, shipped, delivered)."""
    try:
        outcome = services.gateway_webhook_receive(
            body=request.body, signature_header=request.headers.get("Gateway-Signature", "")
        )
    except services.WebhookRejected as error:
        logger.warning("gateway webhook rejected: %s", error)
        return problem_response(request, error.status, "webhook-rejected", str(error))
    return JsonResponse({"outcome": outcome})
