"""The MCP-gateway variant: an AutoGen agent whose tools come from the onbehalf MCP gateway, per user.

The gateway (/mcp on the control plane) lists only the tools this user may call, decides each call, calls the
upstream (crm_server.py) and redacts the result (the CRM's `ssn` comes back as [REDACTED]). The agent reaches it
through an McpWorkbench whose Authorization header is fixed when it is created, so the workbench is built per
user, per agent, per run, from a delegation token the control plane signed for this agent.

Never dump_component() this workbench (or an agent/team holding it): the config would contain the token.

Run it (see README.md):  python examples/autogen/mcp_gateway.py "What is on file for customer c-1?"
"""

from __future__ import annotations

import asyncio
import os
import sys

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.ui import Console
from autogen_core.tools import ToolOverride
from autogen_ext.tools.mcp import McpWorkbench, StreamableHttpServerParams

import onbehalf
from team import model_client

ONBEHALF_URL = os.environ.get("ONBEHALF_URL", "http://127.0.0.1:8787")


def per_user_workbench(token: str) -> McpWorkbench:
    """An McpWorkbench for one user and agent: its headers are fixed for its lifetime."""
    params = StreamableHttpServerParams(
        url=f"{ONBEHALF_URL}/mcp",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30.0,
    )
    # The gateway names tools <upstream>.<tool>; OpenAI function names may not contain dots.
    overrides = {"crm.get_customer": ToolOverride(name="crm_get_customer", description="A customer record by id.")}
    return McpWorkbench(server_params=params, tool_overrides=overrides)


async def main(task: str) -> None:
    client = onbehalf.Client(ONBEHALF_URL)
    model = model_client()
    async with client.acting_as(os.environ["ONBEHALF_USER_TOKEN"], agent="support-bot", tier="interactive"):
        # The gateway takes the agent chain from the delegation token's signature: support-bot -> crm-agent.
        async with client.delegate("crm-agent", scopes=["customers:read"]) as crm:
            if crm.token is None:
                raise SystemExit("the control plane is unreachable: cannot open an MCP session for this user")
            async with per_user_workbench(crm.token) as workbench:  # not a GovernedWorkbench: the gateway governs
                agent = AssistantAgent(
                    "crm_agent",
                    model_client=model,
                    workbench=workbench,
                    reflect_on_tool_use=True,
                    system_message="You answer questions about customers using the CRM tools.",
                )
                await Console(agent.run_stream(task=task))
    await model.close()


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "What is on file for customer c-1?"))
