"""Mail-order pharmacy simulator: a US mail-order pharmacy's JSON order API, the second pharmacy
partner, with a contract of its own (not FHIR, no webhooks).

``POST /v2/orders`` takes an order in the vendor's JSON (patient, shipping address, prescriber
NPI/DEA, line items by NDC or RxNorm code) with an ``Idempotency-Key`` header (same key and
body: the same order, answered again; same key, other body: ``IDEMPOTENCY_KEY_REUSED``) and
answers with the vendor's order id (``MO-000123``). Orders are tracked by polling
``GET /v2/orders/{id}``: they walk RECEIVED → IN_REVIEW → FILLED → SHIPPED (carrier and
tracking number) → DELIVERED, one step per ``step_delay`` seconds, or end CANCELLED
(``POST /v2/orders/{id}/cancel``, refused once filled) or REJECTED (with a reason code).
``GET /v2/inventory.csv`` lists stock by product code. Every request carries ``X-Api-Key``.
Errors are ``{"error": {"code": ..., "message": ...}}``.

Fault knobs (command line, or ``POST /_control`` at run time): latency, error rate (503),
timeout rate (a hang, then 504), down, out-of-stock products, licensed states, a stall that
holds every order where it is, ``lose_next`` (orders that never move again) and
``reject_next`` (orders rejected at review). ``GET /_stats`` counts, ``POST /_reset`` clears.

Standard library only (with sandbox/server.py); it needs no Django settings or database, so
it runs as ``python -m sandbox.mailorder`` as well as ``manage.py run_mailorder_simulator``.
"""

from sandbox.mailorder.app import add_arguments, main, make_server, options_from, serve
from sandbox.mailorder.contract import ERRORS, US_STATES, dea_is_valid, npi_is_valid, parse_order
from sandbox.mailorder.simulator import DEFAULT_STOCK, Simulator, default_catalog

__all__ = [
    "DEFAULT_STOCK",
    "ERRORS",
    "US_STATES",
    "Simulator",
    "add_arguments",
    "dea_is_valid",
    "default_catalog",
    "main",
    "make_server",
    "npi_is_valid",
    "options_from",
    "parse_order",
    "serve",
]
