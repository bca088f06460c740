"""The project's own packages, for tests that read or import all of its code."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Shipped product code (the sandbox simulators are not: they stand in for partners).
PRODUCT_PACKAGES = (
    "accounts",
    "agents",
    "api",
    "audit",
    "billing",
    "common",
    "config",
    "events",
    "interop",
    "notifications",
    "patients",
    "pharmacy",
    "prescriptions",
    "saga",
    "support",
)
