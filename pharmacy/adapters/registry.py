"""Which adapter speaks each partner's contract, with its URL and keys from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings

from pharmacy.adapters.http import HttpGateway
from pharmacy.adapters.mailorder import MailOrderGateway
from pharmacy.gateway import Gateway, GatewayRejected

if TYPE_CHECKING:
    from pharmacy.models import Partner

# The partner every prescription went to before routing: its URL and keys are GATEWAY_*.
DEFAULT_PARTNER_CODE = "gateway"


class PartnerNotConfigured(GatewayRejected):
    """The partner has no URL or keys in this deployment: it is never routed to."""


@dataclass(frozen=True)
class PartnerEndpoint:
    url: str
    api_key: str
    webhook_secret: str


def partner_endpoint(partner: Partner) -> PartnerEndpoint:
    """The partner's URL and keys: PARTNER_SECRETS by its code (GATEWAY_* for the default
    partner); in local mode its simulator's keys fill what is missing."""
    configured = settings.PARTNER_SECRETS.get(partner.code) or {}
    fallback: dict[str, str] = {}
    if partner.code == DEFAULT_PARTNER_CODE:
        fallback = {
            "url": settings.GATEWAY_URL,
            "api_key": settings.GATEWAY_API_KEY,
            "webhook_secret": settings.GATEWAY_WEBHOOK_SECRET,
        }
    elif settings.PARTNER_SIMULATOR_KEYS:
        fallback = _simulator_keys(partner.adapter)
    url = partner.base_url or configured.get("url") or fallback.get("url", "")
    api_key = configured.get("api_key") or fallback.get("api_key", "")
    secret = configured.get("webhook_secret") or fallback.get("webhook_secret", "")
    if not (url and api_key):
        raise PartnerNotConfigured(f"partner {partner.code} has no URL or API key (PARTNER_SECRETS)")
    return PartnerEndpoint(url=url, api_key=api_key, webhook_secret=secret)


def _simulator_keys(adapter: str) -> dict[str, str]:
    if adapter == "mailorder":
        return {"api_key": settings.MAILORDER_SIMULATOR_API_KEY, "webhook_secret": ""}
    return {"api_key": settings.GATEWAY_API_KEY, "webhook_secret": settings.GATEWAY_WEBHOOK_SECRET}


def stock_feed_headers(partner: Partner) -> dict[str, str]:
    """How the partner wants its API key on a stock file request (raises PartnerNotConfigured)."""
    api_key = partner_endpoint(partner).api_key
    if partner.adapter == "mailorder":
        return {"X-Api-Key": api_key}
    return {"Authorization": f"Bearer {api_key}"}


def adapter_for(partner: Partner) -> Gateway:
    """The Gateway that speaks `partner`'s contract (raises PartnerNotConfigured)."""
    endpoint = partner_endpoint(partner)
    timeout = settings.GATEWAY_TIMEOUT_SECONDS
    if partner.adapter == "mailorder":
        return MailOrderGateway(base_url=endpoint.url, api_key=endpoint.api_key, timeout=timeout)
    return HttpGateway(base_url=endpoint.url, api_key=endpoint.api_key, timeout=timeout)
