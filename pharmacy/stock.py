"""Partners' stock feeds: a signed webhook per partner, and a CSV file pulled on a schedule.

Either way a partner reports `product_code, quantity` lines; each line replaces that product's
level for that partner, stamped with when we heard it (routing treats levels older than
PARTNER_STOCK_MAX_AGE_SECONDS as unknown). Dispatches waiting for a partner are routed again
after every change.
"""

from __future__ import annotations

import csv
import io
import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from common import signing
from common.errors import NotFound
from common.jsonsafe import json_loads_bounded
from pharmacy import services
from pharmacy.adapters.http import stock_csv_fetch
from pharmacy.adapters.registry import stock_feed_headers
from pharmacy.gateway import GatewayError
from pharmacy.models import Partner, PartnerStock, StockFeedEvent

logger = logging.getLogger(__name__)

# A feed larger than this is refused whole (a partner's catalogue is a few thousand lines).
MAX_LINES = 20_000
MAX_CSV_BYTES = 2 * 1024 * 1024
PRODUCT_CODE_LENGTH = PartnerStock._meta.get_field("product_code").max_length or 40
EVENT_ID_LENGTH = StockFeedEvent._meta.get_field("event_id").max_length or 80
MAX_QUANTITY = 10_000_000


class StockFeedRejected(services.WebhookRejected):
    """A stock feed that is not acceptable (signature, shape): nothing is changed."""


class PartnerUnknown(NotFound):
    def __init__(self) -> None:
        super().__init__("unknown partner", code="partner-unknown")


def _levels(lines: list[Any]) -> dict[str, int]:
    """`[{"product_code": ..., "quantity": ...}]` checked whole: one bad line refuses the feed."""
    if len(lines) > MAX_LINES:
        raise StockFeedRejected(f"at most {MAX_LINES} stock lines")
    levels: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        code = line.get("product_code") if isinstance(line, dict) else None
        quantity = line.get("quantity") if isinstance(line, dict) else None
        if not isinstance(code, str) or not code.strip() or len(code.strip()) > PRODUCT_CODE_LENGTH:
            raise StockFeedRejected(f"line {number}: product_code must be 1-{PRODUCT_CODE_LENGTH} characters")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 <= quantity <= MAX_QUANTITY:
            raise StockFeedRejected(
                f"line {number}: quantity must be a whole number from 0 to {MAX_QUANTITY}"
            )
        levels[code.strip()] = quantity
    return levels


def partner_stock_record(*, partner: Partner, levels: dict[str, int], source: str) -> int:
    """Replace the partner's level of each product named; returns how many lines."""
    now = timezone.now()
    PartnerStock.objects.bulk_create(
        [
            PartnerStock(partner=partner, product_code=code, quantity=quantity, source=source, updated_at=now)
            for code, quantity in levels.items()
        ],
        update_conflicts=True,
        unique_fields=["partner", "product_code"],
        update_fields=["quantity", "source", "updated_at"],
    )
    return len(levels)


def stock_webhook_receive(*, partner_code: str, body: bytes, signature_header: str) -> str:
    """Verify and apply one partner's stock webhook:
    `{"id": "...", "items": [{"product_code": "...", "quantity": 12}, ...]}`, signed with the
    partner's webhook secret (`Partner-Signature: t=...,v1=...`). A redelivery is a no-op."""
    partner = Partner.objects.filter(code=partner_code[:40], is_active=True).first()
    if partner is None:
        raise PartnerUnknown()
    secret = services.partner_webhook_secret(partner)
    if not signing.signature_verify(
        header=signature_header,
        secrets=[secret],
        body=body,
        tolerance_seconds=settings.PARTNER_STOCK_WEBHOOK_TOLERANCE_SECONDS,
    ):
        raise StockFeedRejected("bad or stale Partner-Signature")
    try:
        feed = json_loads_bounded(body)
    except ValueError as error:
        raise StockFeedRejected("body is not JSON") from error
    if not isinstance(feed, dict) or not isinstance(feed.get("items"), list):
        raise StockFeedRejected("a stock feed is an object with items")
    event_id = feed.get("id")
    if not isinstance(event_id, str) or not event_id or len(event_id) > EVENT_ID_LENGTH:
        raise StockFeedRejected(f"id must be 1-{EVENT_ID_LENGTH} characters")
    levels = _levels(feed["items"])
    try:
        with transaction.atomic():
            StockFeedEvent.objects.create(partner=partner, event_id=event_id, items=len(levels))
            partner_stock_record(partner=partner, levels=levels, source="webhook")
    except IntegrityError:
        return "duplicate"
    services.dispatches_route_waiting_owe()
    return "applied"


def partner_stock_pull(*, partner: Partner) -> int:
    """GET the partner's stock CSV (`product_code,quantity` with a header line) and record it;
    raises StockFeedRejected for a file we cannot read, a GatewayError when it cannot be had."""
    content = stock_csv_fetch(
        url=partner.stock_csv_url,
        headers=stock_feed_headers(partner),
        timeout=settings.GATEWAY_TIMEOUT_SECONDS,
        max_bytes=MAX_CSV_BYTES,
    )
    try:
        rows = list(csv.DictReader(io.StringIO(content.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as error:
        raise StockFeedRejected(f"stock file is not UTF-8 CSV: {error}") from error
    lines = [
        {"product_code": row.get("product_code"), "quantity": _whole(row.get("quantity"))} for row in rows
    ]
    return partner_stock_record(partner=partner, levels=_levels(lines), source="csv")


def _whole(text: object) -> int | None:
    try:
        return int(str(text).strip())
    except ValueError:
        return None


def partner_stock_pull_all() -> dict[str, int]:
    """Beat: pull every active partner's stock CSV; one partner failing leaves the others."""
    report = {"pulled": 0, "failed": 0, "lines": 0}
    for partner in Partner.objects.filter(is_active=True).exclude(stock_csv_url=""):
        try:
            report["lines"] += partner_stock_pull(partner=partner)
        except (GatewayError, StockFeedRejected) as error:
            report["failed"] += 1
            logger.warning("stock CSV of %s not pulled: %s", partner.code, str(error)[:200])
            continue
        report["pulled"] += 1
    if report["pulled"]:
        services.dispatches_route_waiting_owe()
    return report
