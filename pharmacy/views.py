import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from api.problems import domain_error_response
from common.errors import DomainError
from pharmacy import services, stock

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def gateway_webhook(request: HttpRequest) -> JsonResponse:
    """Signed progress events from the pharmacy gateway (dispensed, shipped, delivered)."""
    try:
        outcome = services.gateway_webhook_receive(
            body=request.body, signature_header=request.headers.get("Gateway-Signature", "")
        )
    except DomainError as error:
        logger.warning("gateway webhook rejected: %s", error)
        return domain_error_response(request, error)
    return JsonResponse({"outcome": outcome})


@csrf_exempt
@require_POST
def partner_stock_webhook(request: HttpRequest, partner_code: str) -> JsonResponse:
    """Signed stock levels from a pharmacy partner (its ERP or warehouse)."""
    try:
        outcome = stock.stock_webhook_receive(
            partner_code=partner_code,
            body=request.body,
            signature_header=request.headers.get("Partner-Signature", ""),
        )
    except DomainError as error:
        logger.warning("stock webhook rejected: %s", error)
        return domain_error_response(request, error)
    return JsonResponse({"outcome": outcome})
