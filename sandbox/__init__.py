"""Stand-ins for Scriptline's partners, for development and tests: the pharmacy gateway
(`python -m sandbox.gateway`) and Stripe (`python -m sandbox.stripe`), sharing one HTTP server
(`sandbox.server`). Standard library plus `common.signing`; no Django settings or database
except in the management commands. Product code never imports this package."""
