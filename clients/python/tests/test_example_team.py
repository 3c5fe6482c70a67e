"""examples/autogen/team.py, run as it is with a scripted model (``ReplayChatCompletionClient``) in place of OpenAI,
on the real AutoGen 0.7.5, against a control plane that uses the example's own config (examples/autogen/onbehalf.yaml,
started by test/python/python-client.test.ts), for alice as examples/autogen/README.md mints her.

The script is what a model would say for "refund order o-1001": triage looks the order up and hands off to billing,
billing refunds it, tells the user and hands back, triage ends the run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import unittest
import uuid
from typing import Any
from unittest import mock

from support import ADMIN, EXAMPLE_TOKEN, EXAMPLE_URL, PACKAGE_ROOT, REAL_AUTOGEN, W3C_TRACE_ID, TempDir, call, needs_autogen

TEAM_PY = os.path.join(os.path.dirname(os.path.dirname(PACKAGE_ROOT)), "examples", "autogen", "team.py")

if REAL_AUTOGEN:
    from autogen_core import FunctionCall
    from autogen_core.models import CreateResult, RequestUsage
    from autogen_ext.models.replay import ReplayChatCompletionClient


def says(name: str, **args: Any) -> "CreateResult":
    call_ = FunctionCall(id=f"call_{uuid.uuid4().hex[:8]}", name=name, arguments=json.dumps(args))
    return CreateResult(finish_reason="function_calls", content=[call_], usage=RequestUsage(0, 0), cached=False)


def load_team() -> Any:
    spec = importlib.util.spec_from_file_location("example_team", TEAM_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_audit() -> list[dict[str, Any]]:
    status, body = call("GET", "/v1/audit?limit=1000", bearer=ADMIN, base=EXAMPLE_URL)
    assert status == 200, body
    return sorted(body["records"], key=lambda r: r["seq"])


@needs_autogen
@unittest.skipUnless(EXAMPLE_URL and EXAMPLE_TOKEN, "run through npm test (test/python/python-client.test.ts)")
class ExampleTeamTests(unittest.IsolatedAsyncioTestCase):
    async def test_the_example_team_refunds_for_alice_through_triage_and_billing_in_one_trace(self) -> None:
        team = load_team()
        model = ReplayChatCompletionClient(
            [
                says("lookup_order", order_id="o-1001"),
                says("transfer_to_billing"),
                says("issue_refund", order_id="o-1001", amount=89.0),
                "I refunded 89.0 for order o-1001.",
                says("transfer_to_triage"),
                "Your kettle is refunded in full. TERMINATE",
            ],
            model_info={
                "vision": False,
                "function_calling": True,
                "json_output": False,
                "family": "unknown",
                "structured_output": False,
            },
        )
        home = TempDir()  # the example's client keeps its spool under ~/.onbehalf
        env = {"ONBEHALF_URL": EXAMPLE_URL, "ONBEHALF_USER_TOKEN": EXAMPLE_TOKEN, "HOME": home.path}
        out = io.StringIO()
        try:
            with mock.patch.dict(os.environ, env), contextlib.redirect_stdout(out):
                await team.main("Please refund order o-1001 in full, the kettle arrived broken.", model=model)
        finally:
            home.cleanup()
        printed = out.getvalue()
        self.assertIn("refund issued", printed)  # Console printed what the model was shown
        self.assertIn("TERMINATE", printed)
        trace = printed.rsplit("trace id of this run: ", 1)[1].split()[0]
        self.assertRegex(trace, W3C_TRACE_ID)

        records = example_audit()
        self.assertEqual(
            [(r["tool"], r["chain"], r["tier"], r["decision"]) for r in records if r["kind"] == "attempt"],
            [
                ("lookup_order", ["triage"], "interactive", "allow"),
                ("transfer_to_billing", ["triage"], "interactive", "allow"),
                ("issue_refund", ["triage", "billing"], "subagent", "allow"),
                ("transfer_to_triage", ["triage", "billing"], "subagent", "allow"),
            ],
        )
        self.assertEqual({r["user"] for r in records}, {"alice"})  # every record of the server: attributed to alice
        self.assertEqual({r["trace_id"] for r in records}, {trace})  # and all of one run


if __name__ == "__main__":
    unittest.main()
