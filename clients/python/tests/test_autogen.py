"""onbehalf.autogen on the real AutoGen 0.7.5 (../shared/vendor/python-autogen) and the real control plane: real
``FunctionTool``s in a real ``StaticWorkbench`` behind ``GovernedWorkbench``, ``AssistantAgent``s in a ``Swarm`` and
a ``RoundRobinGroupChat`` driven by ``ReplayChatCompletionClient`` (a scripted model), ``governed_handoff`` and
``@governed``.

test/python/python-client.test.ts runs these in a process of their own, with the vendored AutoGen on the PYTHONPATH
and ONBEHALF_TEST_REAL_AUTOGEN=1; the main run (no AutoGen installed) skips them.

Not tested here: ``McpWorkbench`` against the MCP gateway. The vendored subset holds only ``autogen_ext.models.replay``
of autogen-ext, not ``autogen_ext.tools.mcp`` (nor the MCP SDK it needs), so it cannot run here, and no stand-in
takes its place (a stand-in would only prove agreement with itself). The gateway is tested with a real MCP client in
test/server/mcp-gateway.test.ts.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import unittest
import uuid
from typing import Any

from support import (
    PACKAGE_ROOT,
    PYTHON,
    REAL_AUTOGEN,
    URL,
    W3C_TRACE_ID,
    ControlPlaneStandIn,
    TempDir,
    audit,
    audit_until,
    needs_autogen,
    needs_server,
    run_records,
    token,
)

import onbehalf
from onbehalf import Client, Denied, governed

if REAL_AUTOGEN:
    from importlib.metadata import version

    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
    from autogen_agentchat.messages import ToolCallExecutionEvent
    from autogen_agentchat.teams import RoundRobinGroupChat, Swarm
    from autogen_core import CancellationToken, FunctionCall
    from autogen_core.models import CreateResult, RequestUsage
    from autogen_core.tools import FunctionTool, StaticWorkbench, ToolResult, Workbench
    from autogen_ext.models.replay import ReplayChatCompletionClient

    from onbehalf.autogen import GovernedWorkbench, governed_handoff

SSN = "078-05-1120"
MODEL_INFO = {"vision": False, "function_calling": True, "json_output": False, "family": "unknown", "structured_output": False}


def nonce() -> str:
    return uuid.uuid4().hex[:10]


def text(result: Any) -> str:
    return "\n".join(c.content for c in result.result)


def says(name: str, **args: Any) -> "CreateResult":
    """A model turn that calls one tool (AssistantAgent runs it, through its workbench or its hand-offs)."""
    call = FunctionCall(id=f"call_{nonce()}", name=name, arguments=json.dumps(args))
    return CreateResult(finish_reason="function_calls", content=[call], usage=RequestUsage(0, 0), cached=False)


def scripted(*turns: Any) -> "ReplayChatCompletionClient":
    """A scripted model that can call tools: each model request gets the next turn."""
    return ReplayChatCompletionClient(list(turns), model_info=MODEL_INFO)


def results_seen(messages: list) -> list[tuple[str, str, bool]]:
    """What the model was shown of each tool call: (tool, content, is_error), in order."""
    return [
        (r.name, r.content, r.is_error)
        for m in messages
        if isinstance(m, ToolCallExecutionEvent)
        for r in m.content
    ]


class ToolBox:
    """Real FunctionTools over plain functions; ``ran`` lists the calls that really ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict]] = []

    def tools(self) -> list:
        ran = self.ran

        async def lookup_order(order_id: str) -> dict:
            """Look up an order."""
            ran.append(("lookup_order", {"order_id": order_id}))
            return {"id": order_id, "status": "shipped"}

        async def get_customer(customer_id: str) -> dict:
            """Look up a customer."""
            ran.append(("get_customer", {"customer_id": customer_id}))
            return {"id": customer_id, "ssn": SSN}

        def delete_account(account: str) -> str:
            """Delete an account."""
            ran.append(("delete_account", {"account": account}))
            return "deleted"

        async def export_all(what: str) -> dict:
            """Export everything."""
            ran.append(("export_all", {"what": what}))
            return {"rows": 3}

        async def issue_refund(order: str, amount: int) -> dict:
            """Refund an order."""
            ran.append(("issue_refund", {"order": order, "amount": amount}))
            return {"refunded": amount}

        async def read_email(mailbox: str) -> str:
            """Read a mailbox."""
            ran.append(("read_email", {"mailbox": mailbox}))
            raise RuntimeError("mailbox offline")

        fns = [lookup_order, get_customer, delete_account, export_all, issue_refund, read_email]
        return [FunctionTool(f, description=f.__doc__ or f.__name__) for f in fns]

    def workbench(self) -> "StaticWorkbench":
        return StaticWorkbench(self.tools())


class ImportTests(unittest.TestCase):
    def test_importing_without_autogen_says_what_to_install(self) -> None:
        env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT, PYTHONDONTWRITEBYTECODE="1")
        r = subprocess.run([PYTHON, "-c", "import onbehalf.autogen"], env=env, capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ImportError", r.stderr)
        self.assertIn('pip install "autogen-core>=0.4" "autogen-agentchat>=0.4"', r.stderr)
        # the core package itself needs nothing
        ok = subprocess.run([PYTHON, "-c", "import onbehalf"], env=env, capture_output=True, text=True, timeout=30)
        self.assertEqual(ok.returncode, 0, ok.stderr)

    @needs_autogen
    def test_this_is_the_real_autogen_0_7_5_and_call_tool_has_its_signature(self) -> None:
        self.assertEqual((version("autogen-core"), version("autogen-agentchat")), ("0.7.5", "0.7.5"))
        self.assertIn("python-autogen", inspect.getfile(Workbench))
        ours = inspect.signature(GovernedWorkbench.call_tool).parameters
        theirs = inspect.signature(Workbench.call_tool).parameters
        self.assertEqual(list(ours), list(theirs))
        self.assertEqual([p.default for p in ours.values()], [p.default for p in theirs.values()])
        self.assertFalse(inspect.isabstract(GovernedWorkbench))


@needs_server
@needs_autogen
class WorkbenchTests(unittest.IsolatedAsyncioTestCase):
    """``GovernedWorkbench`` over a real ``StaticWorkbench`` of real ``FunctionTool``s."""

    def setUp(self) -> None:
        self.tmp = TempDir()
        self.client = Client(URL, spool_path=self.tmp.join("spool.jsonl"))
        self.box = ToolBox()
        self.inner = self.box.workbench()
        self.wb = GovernedWorkbench(self.inner, self.client)

    def tearDown(self) -> None:
        self.tmp.cleanup()

    async def test_an_allowed_call_runs_and_the_model_gets_the_redacted_repr(self) -> None:
        async with self.client.acting_as(token("carol"), agent="support-bot"):
            result = await self.wb.call_tool("get_customer", {"customer_id": "c-1"}, CancellationToken(), call_id="c1")
        self.assertFalse(result.is_error)
        self.assertEqual(text(result), str({"id": "c-1", "ssn": "[REDACTED]"}))  # FunctionTool's str(dict), redacted
        self.assertEqual(self.box.ran, [("get_customer", {"customer_id": "c-1"})])

    async def test_a_denial_is_an_error_result_with_the_reason_and_the_tool_does_not_run(self) -> None:
        async with self.client.acting_as(token("carol"), agent="support-bot"):
            result = await self.wb.call_tool("delete_account", {"account": "a-1"})
        self.assertTrue(result.is_error)
        self.assertEqual(result.name, "delete_account")
        self.assertIn("Denied by onbehalf (permission_deny)", text(result))
        self.assertEqual(self.box.ran, [])

    async def test_a_call_with_no_identity_is_refused_and_audited_as_an_anonymous_attempt(self) -> None:
        name = f"probe_{nonce()}"
        result = await self.wb.call_tool(name, {"ssn": SSN})
        self.assertTrue(result.is_error)
        self.assertIn("Denied by onbehalf (no_identity)", text(result))
        self.assertEqual(self.box.ran, [])
        (record,) = audit_until(lambda rs: len(rs) >= 1, tool=name)
        self.assertEqual((record["decision"], record["reason_code"], record["user"]), ("deny", "unauthenticated", None))
        self.assertNotIn(SSN, json.dumps(record))  # nothing attributable, and the arguments are not sent
        self.assertRegex(record["trace_id"], W3C_TRACE_ID)

    async def test_ask_without_waiting_and_blocked_output(self) -> None:
        async with self.client.acting_as(token("carol"), agent="support-bot"):
            asked = await self.wb.call_tool("issue_refund", {"order": "o-1", "amount": 900})
            blocked = await self.wb.call_tool("export_all", {"what": "all"})
        self.assertTrue(asked.is_error)
        self.assertIn("waiting for a human to approve", text(asked))
        self.assertTrue(blocked.is_error)
        self.assertIn("output blocked", text(blocked))
        self.assertEqual([name for name, _ in self.box.ran], ["export_all"])

    async def test_a_tool_error_reaches_the_model_and_is_audited(self) -> None:
        mailbox = "m-" + nonce()
        async with self.client.acting_as(token("carol"), agent="support-bot"):
            result = await self.wb.call_tool("read_email", {"mailbox": mailbox})
        self.assertTrue(result.is_error)
        self.assertIn("mailbox offline", text(result))

        def outcome(records: list[dict]) -> list[dict]:
            return [r for r in records if r["kind"] == "outcome" and (r.get("args") or {}).get("mailbox") == mailbox]

        (record,) = outcome(audit_until(outcome, user="carol", tool="read_email"))
        self.assertEqual(record["outcome"], "error")

    async def test_the_lifecycle_is_the_inner_workbenchs_and_it_is_never_serialized(self) -> None:
        async with self.wb:
            await self.wb.reset()
            self.assertEqual(await self.wb.list_tools(), await self.inner.list_tools())
            state = await self.wb.save_state()
            self.assertEqual(state, await self.inner.save_state())
            await self.wb.load_state(state)
        with self.assertRaises(NotImplementedError):
            self.wb.dump_component()  # a workbench loaded from config would run ungoverned

    async def test_identity_stops_at_a_runtime_started_outside_the_run(self) -> None:
        queue: asyncio.Queue = asyncio.Queue()
        results: list[ToolResult] = []

        async def runtime() -> None:  # started before acting_as, like a runtime passed into the team
            name, args = await queue.get()
            results.append(await self.wb.call_tool(name, args))

        task = asyncio.create_task(runtime())
        async with self.client.acting_as(token("carol"), agent="support-bot"):
            await queue.put(("lookup_order", {"order_id": "o-1"}))
            await task
        self.assertIn("no_identity", text(results[0]))
        self.assertEqual(self.box.ran, [])

    async def test_a_governed_sync_function_tool_loses_the_binding_and_an_async_one_keeps_it(self) -> None:
        c = self.client

        @governed(c)
        def lookup_order(order_id: str) -> dict:
            return {"id": order_id}

        @governed(c, name="lookup_order")
        async def alookup_order(order_id: str) -> dict:
            return {"id": order_id}

        async with c.acting_as(token("carol"), agent="support-bot"):
            kept = await FunctionTool(alookup_order, "d").run_json({"order_id": "o"}, CancellationToken())
            self.assertEqual(kept, {"id": "o"})
            with self.assertRaises(Denied) as caught:  # AutoGen runs sync tools in an executor: no context there
                await FunctionTool(lookup_order, "d").run_json({"order_id": "o"}, CancellationToken())
        self.assertEqual(caught.exception.reason_code, "no_identity")


@needs_server
@needs_autogen
class TeamTests(unittest.IsolatedAsyncioTestCase):
    """Whole AgentChat teams on a scripted model: what the model sees, and what the audit says of the run."""

    def setUp(self) -> None:
        self.tmp = TempDir()
        self.client = Client(URL, spool_path=self.tmp.join("spool.jsonl"))
        self.box = ToolBox()
        self.stand_ins: list[ControlPlaneStandIn] = []

    def tearDown(self) -> None:
        for s in self.stand_ins:
            s.stop()
        self.tmp.cleanup()

    def agent(self, name: str, model: Any, handoffs: list, client: Client | None = None) -> "AssistantAgent":
        workbench = GovernedWorkbench(self.box.workbench(), client or self.client)
        return AssistantAgent(name, model_client=model, workbench=workbench, handoffs=handoffs)

    async def test_a_swarm_hands_off_along_a_signed_chain_of_narrowing_tiers_in_one_trace(self) -> None:
        c = self.client
        order = "o-" + nonce()
        model = scripted(
            says("lookup_order", order_id=order),
            says("transfer_to_billing"),
            says("lookup_order", order_id=order),
            says("transfer_to_specialist"),
            says("lookup_order", order_id=order),
            "The order has shipped. TERMINATE",
        )
        team = Swarm(
            [
                self.agent("triage", model, [governed_handoff("billing", c, scopes=["customers:read", "orders:write"])]),
                self.agent("billing", model, [governed_handoff("specialist", c, tier="background")]),
                self.agent("specialist", model, []),
            ],
            termination_condition=TextMentionTermination("TERMINATE") | MaxMessageTermination(20),
        )
        async with c.acting_as(token("carol"), agent="triage", tier="interactive") as frame:
            run = await team.run(task=f"Where is order {order}?")
            self.assertEqual(onbehalf.current().chain, ("triage",))  # the binding itself is unchanged
        trace = frame.trace_id
        self.assertRegex(trace, W3C_TRACE_ID)
        self.assertEqual([(n, e) for n, _, e in results_seen(run.messages)], [
            ("lookup_order", False),
            ("transfer_to_billing", False),
            ("lookup_order", False),
            ("transfer_to_specialist", False),
            ("lookup_order", False),
        ])
        self.assertEqual(len(self.box.ran), 3)

        records = run_records(trace, 5, kind="attempt", user="carol")
        lookups = [r for r in records if r["tool"] == "lookup_order"]
        self.assertEqual(
            [(r["chain"], r["tier"], r["decision"]) for r in lookups],
            [
                (["triage"], "interactive", "allow"),
                (["triage", "billing"], "subagent", "allow"),
                (["triage", "billing", "specialist"], "background", "allow"),
            ],
        )
        handoffs = [(r["tool"], r["chain"]) for r in records if r["tool"].startswith("transfer_to_")]
        self.assertEqual(handoffs, [("transfer_to_billing", ["triage"]), ("transfer_to_specialist", ["triage", "billing"])])
        # every record carol's run left carries the run's trace id: none was left without it
        of_order = [r for r in audit(user="carol", tool="lookup_order") if (r.get("args") or {}).get("order_id") == order]
        self.assertEqual({r["trace_id"] for r in of_order}, {trace})

    async def test_a_refused_handoff_is_followed_by_audited_denied_attempts_in_order(self) -> None:
        c = self.client
        order = "o-" + nonce()
        model = scripted(
            says("transfer_to_auditor"),  # needs audit:read, which carol does not hold: missing_scope
            says("lookup_order", order_id=order),  # the auditor speaks anyway (a Swarm follows the hand-off)
            says("get_customer", customer_id="c-" + order),
            says("transfer_to_triage"),
            says("lookup_order", order_id=order),
            "Done. TERMINATE",
        )
        team = Swarm(
            [
                self.agent("triage", model, [governed_handoff("auditor", c)]),
                self.agent("auditor", model, [governed_handoff("triage", c)]),
            ],
            termination_condition=TextMentionTermination("TERMINATE") | MaxMessageTermination(20),
        )
        async with c.acting_as(token("carol"), agent="triage") as frame:
            run = await team.run(task=f"Audit order {order}")
        seen = results_seen(run.messages)
        self.assertEqual([n for n, _, _ in seen], ["transfer_to_auditor", "lookup_order", "get_customer", "transfer_to_triage", "lookup_order"])
        self.assertIn("Hand-off to auditor denied by onbehalf (missing_scope)", seen[0][1])
        for name, content, is_error in seen[1:3]:
            self.assertTrue(is_error, name)
            self.assertIn("Denied by onbehalf (missing_scope): the hand-off to auditor was refused", content)
        self.assertFalse(seen[4][2], seen[4][1])
        self.assertEqual(self.box.ran, [("lookup_order", {"order_id": order})])  # only the last call ran

        records = run_records(frame.trace_id, 5, kind="attempt", user="carol")
        self.assertEqual(
            [(r["tool"], r["decision"], r["reason_code"]) for r in records],
            [
                ("transfer_to_auditor", "deny", "missing_scope"),
                ("lookup_order", "deny", "missing_scope"),
                ("get_customer", "deny", "missing_scope"),
                ("transfer_to_triage", "allow", "ok"),
                ("lookup_order", "allow", "ok"),
            ],
        )
        for refused in records[1:3]:  # attempted by the auditor, in the tier its hand-off would have had
            self.assertEqual((refused["agent"], refused["tier"]), ("auditor", "subagent"))
            self.assertTrue(refused["reason"].startswith("refused by the client: the hand-off to auditor was refused"), refused["reason"])
        self.assertEqual(records[1]["args"], {"order_id": order})

    async def test_a_refused_call_is_spooled_while_the_control_plane_is_unreachable(self) -> None:
        proxy = ControlPlaneStandIn(URL)
        self.stand_ins.append(proxy)
        c = Client(proxy.url, spool_path=self.tmp.join("proxied.jsonl"), auto_replay=False)
        wb = GovernedWorkbench(self.box.workbench(), c)
        order = "o-" + nonce()
        async with c.acting_as(token("carol"), agent="triage") as frame:
            message = await governed_handoff("intruder", c).handoff_tool.run_json({}, CancellationToken())
            self.assertIn("Hand-off to intruder denied by onbehalf (permission_deny)", message)
            proxy.mode = "503"
            refused = await asyncio.create_task(wb.call_tool("lookup_order", {"order_id": order}))
        self.assertTrue(refused.is_error)
        self.assertIn("Denied by onbehalf (permission_deny): the hand-off to intruder was refused", text(refused))
        with open(self.tmp.join("proxied.jsonl"), encoding="utf-8") as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual(len(lines), 1)
        spooled = lines[0]["record"]
        self.assertEqual((spooled["decision"], spooled["reason_code"]), ("deny", "fail_closed"))
        self.assertIn("refused by the client (permission_deny): the hand-off to intruder was refused", spooled["reason"])
        self.assertEqual(spooled["trace_id"], frame.trace_id)

        proxy.mode = "forward"
        self.assertEqual(c.flush().accepted, 1)
        records = run_records(frame.trace_id, 2, kind=("attempt", "spooled"), user="carol")
        self.assertEqual(
            [(r["tool"], r["decision"], r["reason_code"]) for r in records],
            [("transfer_to_intruder", "deny", "permission_deny"), ("lookup_order", "deny", "fail_closed")],  # in order
        )
        self.assertEqual(self.box.ran, [])

    async def test_a_round_robin_group_chat_gives_each_agent_its_own_chain(self) -> None:
        c = self.client
        order = "o-" + nonce()
        researcher = AssistantAgent(
            "researcher",
            model_client=scripted(
                says("lookup_order", order_id=order),
                says("issue_refund", order=order, amount=1),  # researcher was delegated customers:read only
            ),
            workbench=GovernedWorkbench(self.box.workbench(), c, agent="researcher", scopes=["customers:read"]),
        )
        writer = AssistantAgent(
            "writer",
            model_client=scripted(says("lookup_order", order_id=order), "Written up. TERMINATE"),
            workbench=GovernedWorkbench(self.box.workbench(), c, agent="writer"),
        )
        team = RoundRobinGroupChat(
            [researcher, writer], termination_condition=TextMentionTermination("TERMINATE") | MaxMessageTermination(12)
        )
        async with c.acting_as(token("carol"), agent="support-bot") as frame:
            run = await team.run(task=f"Write up order {order}")
        seen = results_seen(run.messages)
        self.assertEqual([(n, e) for n, _, e in seen], [("lookup_order", False), ("lookup_order", False), ("issue_refund", True)])
        self.assertIn("Denied by onbehalf (missing_scope)", seen[2][1])

        records = run_records(frame.trace_id, 3, kind="attempt", user="carol")
        self.assertEqual(
            [(r["tool"], r["chain"], r["decision"]) for r in records],
            [
                ("lookup_order", ["support-bot", "researcher"], "allow"),
                ("lookup_order", ["support-bot", "writer"], "allow"),
                ("issue_refund", ["support-bot", "researcher"], "deny"),
            ],
        )

    async def test_a_governed_function_in_an_assistant_agent_shows_the_model_only_what_policy_lets_out(self) -> None:
        c = self.client

        @governed(c)
        async def get_customer(customer_id: str) -> dict:
            """Look up a customer."""
            return {"id": customer_id, "ssn": SSN}

        agent = AssistantAgent(
            "support_bot",
            model_client=scripted(says("get_customer", customer_id="c-7"), "Ada's record is on file."),
            workbench=StaticWorkbench([FunctionTool(get_customer, description="Look up a customer")]),
        )
        async with c.acting_as(token("alice"), agent="support-bot") as frame:
            run = await agent.run(task="Look up customer c-7")
        self.assertEqual(results_seen(run.messages), [("get_customer", str({"id": "c-7", "ssn": "[REDACTED]"}), False)])
        self.assertNotIn(SSN, json.dumps([m.model_dump(mode="json") for m in run.messages]))
        (record,) = run_records(frame.trace_id, 1, kind="attempt", user="alice")
        self.assertEqual((record["tool"], record["chain"], record["user"]), ("get_customer", ["support-bot"], "alice"))


if __name__ == "__main__":
    unittest.main()
