from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """The MCP server for agents (`manage.py run_mcp_server`): read-only tools over a clinic's
    prescriptions, patients' timelines and the formulary. An entry point like the clinic API:
    it reads the domain apps' selectors and models; no domain app imports it."""

    name = "agents"
