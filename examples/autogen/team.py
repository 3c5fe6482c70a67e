"""A governed AutoGen team: triage and billing AssistantAgents in a Swarm (a group chat with hand-offs).

Every tool call is decided by the onbehalf control plane for the human in $ONBEHALF_USER_TOKEN; denials come
back to the model as error tool results; the hand-off from triage to billing is checked, audited and delegated,
so billing's calls carry the signed chain ["triage", "billing"], the tier "subagent", and only the scopes the
hand-off granted. Every record of the run carries one trace id, printed at the end.

Run it (see README.md):  python examples/autogen/team.py "Please refund order o-1001, it arrived broken."
"""

from __future__ import annotations

import asyncio
import os
import sys

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.teams import Swarm
from autogen_agentchat.ui import Console
from autogen_core.models import ChatCompletionClient, ModelFamily
from autogen_core.tools import FunctionTool, StaticWorkbench

import onbehalf
from onbehalf.autogen import GovernedWorkbench, governed_handoff

ORDERS = {
    "o-1001": {"id": "o-1001", "customer": "c-1", "total": 89.0, "status": "delivered", "item": "kettle"},
    "o-1002": {"id": "o-1002", "customer": "c-1", "total": 1290.0, "status": "delivered", "item": "espresso machine"},
}


async def lookup_order(order_id: str) -> dict:
    """Look up an order by its id (o-1001, o-1002, ...)."""
    return ORDERS.get(order_id, {"error": f"no order {order_id}"})


async def issue_refund(order_id: str, amount: float) -> dict:
    """Refund `amount` of an order to the customer."""
    return {"order_id": order_id, "refunded": amount, "status": "refund issued"}


def model_client() -> ChatCompletionClient:
    """An OpenAI model, or any OpenAI-compatible endpoint (vLLM, Ollama, LM Studio, Azure, ...)."""
    from autogen_ext.models.openai import OpenAIChatCompletionClient  # pip install "autogen-ext[openai]"

    kwargs: dict = {
        "model": os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
        "api_key": os.environ.get("OPENAI_API_KEY", "not-needed-for-local-models"),
        "parallel_tool_calls": False,  # one tool call per turn: a hand-off never races another call
    }
    if os.environ.get("OPENAI_BASE_URL"):
        kwargs["base_url"] = os.environ["OPENAI_BASE_URL"]
        kwargs["model_info"] = {  # the client cannot know a custom model's capabilities: declare them
            "vision": False,
            "function_calling": True,
            "json_output": True,
            "family": ModelFamily.UNKNOWN,
            "structured_output": False,
        }
    return OpenAIChatCompletionClient(**kwargs)


async def main(task: str, model: ChatCompletionClient | None = None) -> None:
    """Run the team on ``task`` for the user of $ONBEHALF_USER_TOKEN; ``model`` defaults to ``model_client()``
    (the tests pass a scripted one)."""
    client = onbehalf.Client(
        os.environ.get("ONBEHALF_URL", "http://127.0.0.1:8787"),
        approval_timeout=float(os.environ.get("ONBEHALF_APPROVAL_TIMEOUT", "120")),  # refunds > 500 wait for a human
    )
    user_token = os.environ["ONBEHALF_USER_TOKEN"]
    model = model or model_client()
    lookup = FunctionTool(lookup_order, description="Look up an order by its id.")
    refund = FunctionTool(issue_refund, description="Refund part or all of an order.")

    triage = AssistantAgent(
        "triage",
        model_client=model,
        workbench=GovernedWorkbench(StaticWorkbench([lookup]), client, agent="triage"),
        handoffs=[governed_handoff("billing", client, scopes=["orders:read", "refunds:write"], tier="subagent")],
        system_message=(
            "You are the triage agent of a shop. Look orders up. For refunds, hand off to billing. "
            "If a tool is denied, tell the user why. Say TERMINATE when the user's request is settled."
        ),
    )
    billing = AssistantAgent(
        "billing",
        model_client=model,
        workbench=GovernedWorkbench(StaticWorkbench([lookup, refund]), client, agent="billing"),
        handoffs=[governed_handoff("triage", client)],
        reflect_on_tool_use=True,
        system_message=(
            "You are the billing agent. Refund orders when asked, never more than the order total. "
            "If a refund is denied or waits for approval, say so. Hand back to triage when done."
        ),
    )
    team = Swarm(
        [triage, billing],
        termination_condition=TextMentionTermination("TERMINATE") | MaxMessageTermination(16),
    )

    # The human's identity reaches every speaker, hand-off and nested task of this run, under one trace id.
    async with client.acting_as(user_token, agent="triage", tier="interactive") as run:
        await Console(team.run_stream(task=task))
    await model.close()
    print(f"trace id of this run: {run.trace_id} (every audit record of the run carries it)")
    report = client.flush()  # anything spooled during an outage goes to the control plane now
    if report.remaining:
        print(f"{report.remaining} audit records are still in the local spool", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "Please refund order o-1001 in full, the kettle arrived broken."))
