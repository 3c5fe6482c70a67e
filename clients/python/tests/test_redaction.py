"""Redaction fails closed in the Python client: an SSN behind ``redact: [ssn]`` reaches the model neither as JSON
in a string, nor as a Python repr (what AutoGen's ``FunctionTool`` hands the model: ``str(dict)``), nor as text the
control plane cannot check — against the real control plane, and for AutoGen with the real AutoGen 0.7.5
(``FunctionTool``s returning a dict, a pydantic model and strings, in a ``StaticWorkbench`` wrapped by
``GovernedWorkbench``, and an ``AssistantAgent`` run).

The AutoGen tests need the real AutoGen: test/python/python-client.test.ts runs them in a process of their own, with
``ONBEHALF_TEST_REAL_AUTOGEN=1`` and the PYTHONPATH printed by ../shared/vendor/python-autogen/pythonpath.sh.
"""

from __future__ import annotations

import ast
import datetime
import json
import unittest
import uuid
from typing import Any

from onbehalf import Client, governed

from support import URL, TempDir, audit_until, needs_autogen, needs_server, token

SSN = "078-05-1120"
CARD = "4111111111111111"
REDACTED = "[REDACTED]"
WITHHELD = "[withheld by onbehalf: plain text from {tool}, which cannot be checked for the fields policy redacts]"


try:  # pydantic comes with AutoGen: the models a FunctionTool of the real-AutoGen tests returns
    from pydantic import BaseModel

    class Card(BaseModel):
        number: str
        brand: str

    class Customer(BaseModel):
        id: str
        name: str
        ssn: str
        cards: list[Card]
        vip: bool

except ImportError:
    pass


def customer(customer_id: str = "c-1") -> dict[str, Any]:
    return {"id": customer_id, "name": "Ada", "ssn": SSN, "cards": [{"number": CARD, "brand": "visa"}], "vip": True}


def redacted(customer_id: str = "c-1") -> dict[str, Any]:
    return {**customer(customer_id), "ssn": REDACTED, "cards": [{"number": REDACTED, "brand": "visa"}]}


def nonce() -> str:
    return uuid.uuid4().hex[:10]


@needs_server
class GovernedOutputTests(unittest.TestCase):
    """``@governed`` functions under ``post_transform: redact`` (tenant acme), tool ``get_customer``."""

    def setUp(self) -> None:
        self.tmp = TempDir()
        self.client = Client(URL, spool_path=self.tmp.join("spool.jsonl"))

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def shown(self, output: Any, name: str = "get_customer", customer_id: str | None = None) -> Any:
        @governed(self.client, name=name)
        def tool(customer_id: str) -> Any:
            return output

        with self.client.acting_as(token("alice"), agent="support-bot"):
            return tool(customer_id or "c-" + nonce())

    def test_json_in_a_string_is_redacted_and_stays_a_string(self) -> None:
        out = self.shown(json.dumps(customer()))
        self.assertIsInstance(out, str)
        self.assertNotIn(SSN, out)
        self.assertEqual(json.loads(out), redacted())

    def test_a_python_repr_is_redacted_and_stays_a_repr(self) -> None:
        out = self.shown(str(customer()))
        self.assertIsInstance(out, str)
        self.assertNotIn(SSN, out)
        self.assertNotIn(CARD, out)
        self.assertEqual(out, str(redacted()))
        self.assertEqual(ast.literal_eval(out), redacted())

    def test_a_repr_it_cannot_parse_is_withheld_with_a_reason(self) -> None:
        out = self.shown(str({**customer(), "since": datetime.date(2020, 1, 2)}))
        self.assertEqual(out, WITHHELD.format(tool="get_customer"))

    def test_plain_text_is_withheld_with_a_reason_and_audited(self) -> None:
        customer_id = "c-" + nonce()
        out = self.shown(f"Ada Lovelace, SSN {SSN}", customer_id=customer_id)
        self.assertEqual(out, WITHHELD.format(tool="get_customer"))

        def outcome(records: list[dict]) -> list[dict]:
            return [r for r in records if r["kind"] == "outcome" and (r.get("args") or {}).get("customer_id") == customer_id]

        record = outcome(audit_until(outcome, user="alice", tool="get_customer"))[0]
        self.assertEqual(record["reason"], "output redacted; withheld, as redaction cannot check it: plain text")

    def test_a_dict_is_redacted_as_before(self) -> None:
        self.assertEqual(self.shown(customer()), redacted())

    def test_text_passes_for_a_tool_with_unparsed_output_pass(self) -> None:
        note = f"Ada Lovelace, SSN {SSN}"
        self.assertEqual(self.shown(note, name="customer_notes"), note)
        self.assertEqual(ast.literal_eval(self.shown(str(customer()), name="customer_notes"))["ssn"], REDACTED)

    def test_nothing_is_parsed_or_withheld_for_a_tool_without_redaction_paths(self) -> None:
        text = str(customer())
        self.assertIs(self.shown(text, name="lookup_order"), text)


@needs_server
@needs_autogen
class RealAutogenRedactionTests(unittest.IsolatedAsyncioTestCase):
    """Real ``FunctionTool``s (a dict, a pydantic model, strings) in a real ``StaticWorkbench``, wrapped by
    ``GovernedWorkbench``."""

    def setUp(self) -> None:
        from autogen_core.tools import FunctionTool, StaticWorkbench

        from onbehalf.autogen import GovernedWorkbench

        self.tmp = TempDir()
        self.client = Client(URL, spool_path=self.tmp.join("spool.jsonl"))

        def get_customer(customer_id: str) -> dict:
            """Look up a customer."""
            return customer(customer_id)

        def get_customer_since(customer_id: str) -> dict:
            """A customer with a date: its repr is not a literal."""
            return {**customer(customer_id), "since": datetime.date(2020, 1, 2)}

        def get_customer_text(customer_id: str) -> str:
            """A customer as prose."""
            return f"{customer_id}: Ada Lovelace, SSN {SSN}"

        def get_customer_json(customer_id: str) -> str:
            """A customer as JSON text."""
            return json.dumps(customer(customer_id))

        def get_customer_model(customer_id: str) -> Customer:
            """A customer as a pydantic model."""
            return Customer(**customer(customer_id))

        tools = [
            FunctionTool(get_customer, description="Look up a customer", name="get_customer"),
            FunctionTool(get_customer_since, description="with a date", name="get_customer_since"),
            FunctionTool(get_customer_text, description="as prose", name="get_customer_text"),
            FunctionTool(get_customer_json, description="as JSON", name="get_customer_json"),
            FunctionTool(get_customer_model, description="as a model", name="get_customer_model"),
            FunctionTool(get_customer_text, description="notes", name="customer_notes"),
        ]
        self.inner = StaticWorkbench(tools)
        self.wb = GovernedWorkbench(self.inner, self.client)

    def tearDown(self) -> None:
        self.tmp.cleanup()

    async def call(self, name: str) -> Any:
        async with self.client.acting_as(token("alice"), agent="support-bot"):
            return await self.wb.call_tool(name, {"customer_id": "c-1"})

    @staticmethod
    def text(result: Any) -> str:
        return "".join(c.content for c in result.result)

    async def parts(self, texts: list[str], is_error: bool = False) -> Any:
        """A result of several text parts (as McpWorkbench returns), from a real StaticWorkbench."""
        from autogen_core.tools import StaticWorkbench, TextResultContent, ToolResult

        from onbehalf.autogen import GovernedWorkbench

        class PartsWorkbench(StaticWorkbench):  # the real workbench, answering with several parts
            async def call_tool(self, name, arguments=None, cancellation_token=None, call_id=None):  # type: ignore[override]
                return ToolResult(name=name, result=[TextResultContent(content=t) for t in texts], is_error=is_error)

        wb = GovernedWorkbench(PartsWorkbench(list(self.inner._tools)), self.client)
        async with self.client.acting_as(token("alice"), agent="support-bot"):
            return await wb.call_tool("get_customer", {"customer_id": "c-1"})

    async def test_each_of_several_json_parts_is_redacted(self) -> None:
        result = await self.parts([json.dumps(customer()), json.dumps(customer("c-2"))])
        self.assertNotIn(SSN, self.text(result))
        self.assertEqual([json.loads(c.content)["ssn"] for c in result.result], ["[REDACTED]", "[REDACTED]"])

    async def test_prose_beside_a_json_part_is_withheld(self) -> None:
        result = await self.parts([json.dumps(customer()), f"note: the SSN is {SSN}"])
        self.assertNotIn(SSN, self.text(result))
        self.assertEqual(json.loads(result.result[0].content)["ssn"], "[REDACTED]")
        self.assertTrue(result.result[1].content.startswith("[withheld by onbehalf: plain text from get_customer"))

    async def test_an_error_result_is_redacted_like_any_output(self) -> None:
        result = await self.parts([json.dumps({"error": "duplicate", "ssn": SSN})], is_error=True)
        self.assertTrue(result.is_error)
        self.assertNotIn(SSN, self.text(result))

    async def test_the_real_function_tool_hands_the_model_a_repr_not_json(self) -> None:
        unguarded = await self.inner.call_tool("get_customer", {"customer_id": "c-1"})
        self.assertEqual(self.text(unguarded), str(customer()))  # what leaked: str(dict), which is not JSON
        with self.assertRaises(ValueError):
            json.loads(self.text(unguarded))

    async def test_a_dict_from_a_function_tool_is_redacted_in_its_repr(self) -> None:
        result = await self.call("get_customer")
        self.assertFalse(result.is_error)
        self.assertNotIn(SSN, self.text(result))
        self.assertNotIn(CARD, self.text(result))
        self.assertEqual(self.text(result), str(redacted()))

    async def test_a_pydantic_model_from_a_function_tool_is_redacted_in_its_json(self) -> None:
        unguarded = await self.inner.call_tool("get_customer_model", {"customer_id": "c-1"})
        self.assertEqual(json.loads(self.text(unguarded)), customer())  # FunctionTool dumps a model as JSON
        result = await self.call("get_customer_model")
        self.assertFalse(result.is_error)
        self.assertNotIn(SSN, self.text(result))
        self.assertNotIn(CARD, self.text(result))
        self.assertEqual(json.loads(self.text(result)), redacted())

    async def test_a_repr_it_cannot_parse_is_withheld_with_a_reason(self) -> None:
        result = await self.call("get_customer_since")
        self.assertFalse(result.is_error)
        self.assertEqual(self.text(result), WITHHELD.format(tool="get_customer_since"))

    async def test_plain_text_from_a_function_tool_is_withheld(self) -> None:
        result = await self.call("get_customer_text")
        self.assertEqual(self.text(result), WITHHELD.format(tool="get_customer_text"))

    async def test_json_text_from_a_function_tool_stays_json(self) -> None:
        result = await self.call("get_customer_json")
        self.assertEqual(json.loads(self.text(result)), redacted())

    async def test_text_passes_for_a_tool_with_unparsed_output_pass(self) -> None:
        result = await self.call("customer_notes")
        self.assertIn(SSN, self.text(result))

    async def test_an_assistant_agent_never_shows_the_model_the_ssn(self) -> None:
        from autogen_agentchat.agents import AssistantAgent
        from autogen_agentchat.messages import ToolCallExecutionEvent
        from autogen_core import FunctionCall
        from autogen_core.models import CreateResult, RequestUsage
        from autogen_ext.models.replay import ReplayChatCompletionClient

        calls = [FunctionCall(id="call_1", name="get_customer", arguments=json.dumps({"customer_id": "c-1"}))]
        model = ReplayChatCompletionClient(
            [
                CreateResult(
                    finish_reason="function_calls", content=calls, usage=RequestUsage(0, 0), cached=False
                ),
                "Ada's record is on file.",
            ]
        )
        agent = AssistantAgent("support_bot", model_client=model, workbench=self.wb)
        async with self.client.acting_as(token("alice"), agent="support-bot"):
            run = await agent.run(task="Look up customer c-1")
        executed = [m for m in run.messages if isinstance(m, ToolCallExecutionEvent)]
        self.assertEqual(len(executed), 1)
        seen = executed[0].content[0]
        self.assertFalse(seen.is_error)
        self.assertEqual(seen.content, str(redacted()))
        self.assertNotIn(SSN, json.dumps([m.model_dump(mode="json") for m in run.messages]))


if __name__ == "__main__":
    unittest.main()
