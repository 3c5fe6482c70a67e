"""onbehalf.autogen against tiny STAND-INS of autogen-core 0.7.5 / autogen-agentchat (tests/stand_ins; AutoGen
cannot be installed here) and the real control plane."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import unittest
import uuid
from typing import Any, Callable, List, Mapping

from support import HERE, PACKAGE_ROOT, PYTHON, URL, TempDir, audit_until, needs_server, token

sys.path.insert(0, os.path.join(HERE, "stand_ins"))

from autogen_core import CancellationToken  # noqa: E402  (stand-in)
from autogen_core.tools import FunctionTool, TextResultContent, ToolResult, ToolSchema, Workbench  # noqa: E402

import onbehalf  # noqa: E402
from onbehalf import Client, Denied, governed  # noqa: E402
from onbehalf.autogen import GovernedWorkbench, governed_handoff  # noqa: E402


class ToyWorkbench(Workbench):
    """Like StaticWorkbench: runs functions, returns their JSON as text, an exception as an error result."""

    def __init__(self, tools: Mapping[str, Callable[..., Any]]) -> None:
        self.tools = dict(tools)
        self.calls: list[tuple[str, dict, str | None]] = []
        self.events: list[str] = []

    async def list_tools(self) -> List[ToolSchema]:
        return [{"name": n, "description": n, "parameters": {"type": "object", "properties": {}}} for n in self.tools]

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        self.calls.append((name, dict(arguments or {}), call_id))
        try:
            value = self.tools[name](**(arguments or {}))
        except Exception as e:  # noqa: BLE001
            return ToolResult(name=name, result=[TextResultContent(content=f"Error: {e}")], is_error=True)
        text = value if isinstance(value, str) else json.dumps(value)
        return ToolResult(name=name, result=[TextResultContent(content=text)])

    async def start(self) -> None:
        self.events.append("start")

    async def stop(self) -> None:
        self.events.append("stop")

    async def reset(self) -> None:
        self.events.append("reset")

    async def save_state(self) -> Mapping[str, Any]:
        return {"type": "toy", "n": len(self.calls)}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.events.append(f"load:{state['n']}")


def text(result: ToolResult) -> str:
    return "\n".join(c.content for c in result.result)


def nonce() -> str:
    return uuid.uuid4().hex[:10]


def chains_of(user: str, tool: str, order: str, count: int = 1) -> list[list[str]]:
    def mine(rs: list[dict]) -> list[dict]:
        return [r for r in rs if r["kind"] == "attempt" and (r.get("args") or {}).get("order_id") == order]

    found = mine(audit_until(lambda rs: len(mine(rs)) >= count, user=user, tool=tool))
    return [r["chain"] for r in sorted(found, key=lambda r: r["seq"])]  # oldest first


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

    def test_call_tool_has_the_workbench_signature(self) -> None:
        ours = inspect.signature(GovernedWorkbench.call_tool).parameters
        theirs = inspect.signature(Workbench.call_tool).parameters
        self.assertEqual(list(ours), list(theirs))
        self.assertEqual([p.default for p in ours.values()], [p.default for p in theirs.values()])
        self.assertFalse(inspect.isabstract(GovernedWorkbench))


@needs_server
class WorkbenchTests(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        self.tmp = TempDir()
        self.client = Client(URL, spool_path=self.tmp.join("spool.jsonl"))
        self.inner = ToyWorkbench(
            {
                "get_customer": lambda customer_id: {"id": customer_id, "ssn": "078-05-1120"},
                "lookup_order": lambda order_id: {"id": order_id, "status": "shipped"},
                "delete_account": lambda account: "deleted",
                "export_all": lambda what: {"rows": 3},
                "issue_refund": lambda order, amount: {"refunded": amount},
                "read_email": lambda mailbox: (_ for _ in ()).throw(RuntimeError("mailbox offline")),
            }
        )
        self.wb = GovernedWorkbench(self.inner, self.client)

    def tearDown(self) -> None:
        self.tmp.cleanup()

    async def test_allowed_call_is_run_reported_and_redacted(self) -> None:
        async with self.client.acting_as(token("carol"), agent="support-bot"):
            result = await self.wb.call_tool("get_customer", {"customer_id": "c-1"}, CancellationToken(), call_id="call_1")
        self.assertFalse(result.is_error)
        self.assertEqual(json.loads(text(result)), {"id": "c-1", "ssn": "[REDACTED]"})
        self.assertEqual(self.inner.calls, [("get_customer", {"customer_id": "c-1"}, "call_1")])

    async def test_denial_is_an_error_tool_result_with_the_reason(self) -> None:
        async with self.client.acting_as(token("carol"), agent="support-bot"):
            result = await self.wb.call_tool("delete_account", {"account": "a-1"})
        self.assertTrue(result.is_error)
        self.assertEqual(result.name, "delete_account")
        self.assertIn("Denied by onbehalf (permission_deny)", text(result))
        self.assertEqual(self.inner.calls, [])

    async def test_no_identity_is_an_error_tool_result(self) -> None:
        result = await self.wb.call_tool("lookup_order", {"order_id": "o-1"})
        self.assertTrue(result.is_error)
        self.assertIn("no_identity", text(result))
        self.assertEqual(self.inner.calls, [])

    async def test_ask_without_waiting_and_blocked_output(self) -> None:
        async with self.client.acting_as(token("carol"), agent="support-bot"):
            asked = await self.wb.call_tool("issue_refund", {"order": "o-1", "amount": 900})
            blocked = await self.wb.call_tool("export_all", {"what": "all"})
        self.assertTrue(asked.is_error)
        self.assertIn("waiting for a human to approve", text(asked))
        self.assertTrue(blocked.is_error)
        self.assertIn("output blocked", text(blocked))
        self.assertEqual([c[0] for c in self.inner.calls], ["export_all"])

    async def test_inner_errors_pass_through_and_are_reported(self) -> None:
        async with self.client.acting_as(token("carol"), agent="support-bot"):
            result = await self.wb.call_tool("read_email", {"mailbox": "m-" + nonce()})
        self.assertTrue(result.is_error)
        self.assertIn("mailbox offline", text(result))

    async def test_lifecycle_is_delegated(self) -> None:
        async with self.wb:
            await self.wb.reset()
            self.assertEqual([t["name"] for t in await self.wb.list_tools()], list(self.inner.tools))
            state = await self.wb.save_state()
            await self.wb.load_state(state)
        self.assertEqual(self.inner.events, ["start", "reset", "load:0", "stop"])
        with self.assertRaises(NotImplementedError):
            self.wb._to_config()

    async def test_governed_handoffs_extend_the_signed_chain(self) -> None:
        """triage -> billing -> specialist, each speaker in its own task, as AutoGen's runtime runs them."""
        c = self.client
        to_billing = governed_handoff("billing", c, scopes=["customers:read", "orders:write"])
        to_specialist = governed_handoff("specialist", c, message="over to the specialist")
        self.assertEqual((to_billing.name, to_billing.target), ("transfer_to_billing", "billing"))
        order = nonce()

        async def turn(coro_fn: Callable[[], Any]) -> Any:
            return await asyncio.create_task(coro_fn())

        async with c.acting_as(token("carol"), agent="triage", tier="interactive"):
            await turn(lambda: self.wb.call_tool("lookup_order", {"order_id": order}))
            msg = await turn(lambda: to_billing.handoff_tool.run_json({}, CancellationToken(), call_id="h1"))
            self.assertEqual(msg, "Transferred to billing, adopting the role of billing immediately.")
            await turn(lambda: self.wb.call_tool("lookup_order", {"order_id": order}))
            msg2 = await turn(lambda: to_specialist.handoff_tool.run_json({}, CancellationToken()))
            self.assertEqual(msg2, "over to the specialist")
            result = await turn(lambda: self.wb.call_tool("lookup_order", {"order_id": order}))
            self.assertFalse(result.is_error, text(result))
            self.assertEqual(onbehalf.current().chain, ("triage",))  # the binding itself is unchanged
        self.assertEqual(
            chains_of("carol", "lookup_order", order, 3),
            [["triage"], ["triage", "billing"], ["triage", "billing", "specialist"]],
        )
        checked = audit_until(lambda rs: any(r["kind"] == "attempt" for r in rs), user="carol", tool="transfer_to_billing")
        self.assertIn(["triage"], [r["chain"] for r in checked if r["kind"] == "attempt"])

    async def test_per_agent_workbenches_in_a_group_chat(self) -> None:
        c = self.client
        researcher = GovernedWorkbench(self.inner, c, agent="researcher", scopes=["customers:read"])
        writer = GovernedWorkbench(self.inner, c, agent="writer")
        order = nonce()
        async with c.acting_as(token("carol"), agent="support-bot"):
            for wb in (researcher, writer, researcher):
                r = await asyncio.create_task(wb.call_tool("lookup_order", {"order_id": order}))
                self.assertFalse(r.is_error, text(r))
            denied = await researcher.call_tool("issue_refund", {"order": order, "amount": 1})
        self.assertIn("missing_scope", text(denied))
        self.assertEqual(
            sorted(chains_of("carol", "lookup_order", order, 3)),
            [["support-bot", "researcher"], ["support-bot", "researcher"], ["support-bot", "writer"]],
        )

    async def test_a_refused_handoff_quarantines_its_target(self) -> None:
        c = self.client
        order = nonce()
        async with c.acting_as(token("carol"), agent="triage"):
            msg = await governed_handoff("intruder", c).handoff_tool.run_json({}, CancellationToken())
            self.assertIn("Hand-off to intruder denied by onbehalf (permission_deny)", msg)
            refused = await asyncio.create_task(self.wb.call_tool("lookup_order", {"order_id": order}))
            self.assertTrue(refused.is_error)
            self.assertIn("the hand-off to intruder was refused", text(refused))
            back = await governed_handoff("triage", c).handoff_tool.run_json({}, CancellationToken())
            self.assertIn("Transferred to triage", back)
            again = await self.wb.call_tool("lookup_order", {"order_id": order})
            self.assertFalse(again.is_error, text(again))
            with self.assertRaises(Denied):
                await governed_handoff("intruder", c, raise_on_denied=True).handoff_tool.run_json({}, CancellationToken())
        self.assertEqual(chains_of("carol", "lookup_order", order), [["triage"]])
        self.assertEqual(self.inner.calls, [("lookup_order", {"order_id": order}, None)])

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

    async def test_sync_function_tools_lose_the_context_async_ones_keep_it(self) -> None:
        c = self.client

        @governed(c)
        def lookup_order(order_id: str) -> dict:
            return {"id": order_id}

        @governed(c, name="lookup_order")
        async def alookup_order(order_id: str) -> dict:
            return {"id": order_id}

        async with c.acting_as(token("carol"), agent="support-bot"):
            self.assertEqual(await FunctionTool(alookup_order, "d").run_json({"order_id": "o"}, CancellationToken()), {"id": "o"})
            with self.assertRaises(Denied) as caught:  # AutoGen runs sync tools in an executor: no context there
                await FunctionTool(lookup_order, "d").run_json({"order_id": "o"}, CancellationToken())
        self.assertEqual(caught.exception.reason_code, "no_identity")


if __name__ == "__main__":
    unittest.main()
