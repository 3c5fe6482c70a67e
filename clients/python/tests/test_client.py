"""Decisions, redaction, delegation, verification and approvals against the real control plane."""

from __future__ import annotations

import base64
import contextvars
import json
import os
import threading
import unittest
import uuid

import onbehalf
from onbehalf import ApprovalRequired, Client, Denied, Unauthenticated, Unavailable, governed

from support import (
    ADMIN,
    APPROVAL_TTL,
    URL,
    W3C_TRACE_ID,
    TempDir,
    audit,
    audit_until,
    call,
    free_port,
    needs_server,
    run_records,
    token,
    wait_for,
)

try:
    from opentelemetry import trace as otel_trace
except ImportError:  # the main run has no OpenTelemetry; the real-AutoGen run brings its API along
    otel_trace = None


def nonce() -> str:
    return uuid.uuid4().hex[:12]


def attempts(user: str, tool: str, **match: object) -> list[dict]:
    """Attempt records of ``user`` calling ``tool`` whose args contain ``match`` (waits for the first)."""

    def mine(records: list[dict]) -> list[dict]:
        return [
            r
            for r in records
            if r["kind"] == "attempt" and all((r.get("args") or {}).get(k) == v for k, v in match.items())
        ]

    return mine(audit_until(mine, user=user, tool=tool))


def outcomes(user: str, tool: str, call_id: str) -> list[dict]:
    def mine(records: list[dict]) -> list[dict]:
        return [r for r in records if r["call_id"] == call_id and r["kind"] == "outcome"]

    return mine(audit_until(mine, user=user, tool=tool))


@needs_server
class DecisionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = TempDir()
        self.client = Client(URL, spool_path=self.tmp.join("spool.jsonl"))
        self.ran: list[str] = []
        c = self.client

        @governed(c)
        def lookup_order(order_id: str) -> dict:
            self.ran.append("lookup_order")
            return {"id": order_id, "status": "shipped"}

        @governed(c)
        def get_customer(customer_id: str) -> dict:
            return {"id": customer_id, "ssn": "078-05-1120", "cards": [{"number": "4111111111111111", "brand": "visa"}]}

        @governed(c)
        def delete_account(account: str) -> str:
            self.ran.append("delete_account")
            return "deleted"

        @governed(c)
        def export_all(what: str) -> dict:
            self.ran.append("export_all")
            return {"rows": 12}

        @governed(c, name="issue_refund")
        def refund(order: str, amount: int = 900) -> dict:
            self.ran.append("issue_refund")
            return {"order": order, "refunded": amount}

        @governed(c)
        def read_email(mailbox: str) -> list:
            return [{"from": "x@example.com"}]

        self.lookup_order, self.get_customer, self.delete_account = lookup_order, get_customer, delete_account
        self.export_all, self.refund, self.read_email = export_all, refund, read_email

    def tearDown(self) -> None:
        self.client.close()
        self.tmp.cleanup()

    def test_allowed_call_runs_and_is_reported(self) -> None:
        n = nonce()
        with self.client.acting_as(token("alice"), agent="support-bot", tier="interactive"):
            self.assertEqual(self.lookup_order(n), {"id": n, "status": "shipped"})
        [attempt] = attempts("alice", "lookup_order", order_id=n)
        self.assertEqual((attempt["decision"], attempt["reason_code"], attempt["chain"]), ("allow", "ok", ["support-bot"]))
        self.assertEqual([o["outcome"] for o in outcomes("alice", "lookup_order", attempt["call_id"])], ["ok"])

    def test_denied_call_raises_with_reason_code_and_does_not_run(self) -> None:
        with self.client.acting_as(token("alice"), agent="support-bot"):
            with self.assertRaises(Denied) as caught:
                self.delete_account("acct-1")
        self.assertEqual(caught.exception.reason_code, "permission_deny")
        self.assertEqual(caught.exception.tool, "delete_account")
        self.assertEqual(caught.exception.chain, ("support-bot",))
        self.assertIn("delete_account: denied (permission_deny)", str(caught.exception))
        self.assertNotIn("delete_account", self.ran)

    def test_missing_scope(self) -> None:
        with self.client.acting_as(token("dave"), agent="support-bot"):
            with self.assertRaises(Denied) as caught:
                self.refund("o-1", amount=5)
        self.assertEqual(caught.exception.reason_code, "missing_scope")
        self.assertEqual(self.ran, [])

    def test_output_is_redacted_by_policy(self) -> None:
        with self.client.acting_as(token("alice"), agent="support-bot"):
            out = self.get_customer("c-1")
        self.assertEqual(out["ssn"], "[REDACTED]")
        self.assertEqual(out["cards"], [{"number": "[REDACTED]", "brand": "visa"}])
        self.assertEqual(out["id"], "c-1")

    def test_blocked_output_raises_output_blocked(self) -> None:
        with self.client.acting_as(token("alice"), agent="support-bot"):
            with self.assertRaises(Denied) as caught:
                self.export_all("everything")
        self.assertEqual((caught.exception.reason_code, caught.exception.reason), ("output_blocked", "output blocked"))
        self.assertEqual(self.ran, ["export_all"])  # it ran; policy withheld what it returned

    def test_no_identity_is_denied_never_a_silent_no_op(self) -> None:
        self.assertIsNone(onbehalf.current())
        with self.assertRaises(Denied) as caught:
            self.lookup_order("o-1")
        self.assertEqual(caught.exception.reason_code, "no_identity")
        self.assertIn("acting_as", caught.exception.reason)
        with self.assertRaises(Denied) as checked:
            self.client.check("lookup_order", {"order_id": "o-1"})
        self.assertEqual(checked.exception.reason_code, "no_identity")
        self.assertEqual(self.ran, [])
        with self.client.acting_as(token("alice"), agent="support-bot"):
            self.lookup_order("o-1")
        self.assertIsNone(onbehalf.current())  # the block restored what was bound before
        with self.assertRaises(Denied):
            self.lookup_order("o-1")

    def test_a_call_with_no_identity_is_still_an_audited_attempt(self) -> None:
        tool = f"probe_{nonce()}"
        with self.assertRaises(Denied) as caught:
            self.client.check(tool, {"customer_id": "c-1"})
        self.assertEqual(caught.exception.reason_code, "no_identity")
        # sent without a token: the control plane answered 401 and recorded an anonymous attempt, without arguments
        (record,) = audit_until(lambda rs: len(rs) >= 1, tool=tool)
        self.assertEqual((record["kind"], record["decision"], record["reason_code"]), ("attempt", "deny", "unauthenticated"))
        self.assertIsNone(record["user"])
        self.assertRegex(record["trace_id"], W3C_TRACE_ID)

    def test_tool_exception_is_reported_and_reraised(self) -> None:
        n = nonce()

        @governed(self.client, name="lookup_order")
        def broken(order_id: str) -> dict:
            raise ValueError("database down")

        with self.client.acting_as(token("alice"), agent="support-bot"):
            with self.assertRaises(ValueError):
                broken(n)
        [attempt] = attempts("alice", "lookup_order", order_id=n)
        outcome = outcomes("alice", "lookup_order", attempt["call_id"])
        self.assertEqual(outcome[0]["outcome"], "error")
        self.assertIn("database down", outcome[0]["reason"])

    def test_arguments_are_bound_by_signature_with_defaults(self) -> None:
        # amount defaults to 900: the policy sees it (args.amount > 500 asks for approval)
        with self.client.acting_as(token("alice"), agent="support-bot"):
            with self.assertRaises(ApprovalRequired) as caught:
                self.refund("o-9")
            self.assertEqual(self.refund(order="o-9", amount=20), {"order": "o-9", "refunded": 20})
        self.assertTrue(caught.exception.approval_id.startswith("apr_"))
        self.assertEqual(caught.exception.reason_code, "approval_required")
        self.assertEqual(self.ran, ["issue_refund"])

    def test_check_and_report(self) -> None:
        with self.client.acting_as(token("alice"), agent="support-bot", tier="interactive", trace_id="req-42"):
            d = self.client.check("get_customer", {"customer_id": "c-1"})
            self.assertEqual((d.decision, d.reason_code, d.fail_mode, d.chain), ("allow", "ok", "fail_closed", ("support-bot",)))
            self.assertIn("customers:read", d.effective_scopes)
            self.assertIsNone(d.approval)
            self.assertFalse(d.local)
            out = self.client.report(d, {"id": "c-1", "ssn": "1"})
            self.assertEqual(out, {"id": "c-1", "ssn": "[REDACTED]"})
            denied = self.client.check("delete_account", {})
            self.assertEqual((denied.decision, denied.reason_code), ("deny", "permission_deny"))
            asked = self.client.check("issue_refund", {"order": "o", "amount": 501})
            self.assertEqual((asked.decision, asked.reason_code, asked.rule), ("ask", "approval_required", "big-refunds"))
            self.assertTrue(asked.approval["id"].startswith("apr_"))
        [r] = [r for r in attempts("alice", "get_customer", customer_id="c-1") if r["call_id"] == d.call_id]
        self.assertEqual(r["trace_id"], "req-42")

    def test_check_keeps_no_server_state_unless_it_reports(self) -> None:
        n = nonce()
        with self.client.acting_as(token("alice"), agent="support-bot"):
            unreported = self.client.check("get_customer", {"customer_id": n})
            reported = self.client.check("get_customer", {"customer_id": f"{n}-r"})
            self.assertEqual(self.client.report(reported, {"id": n, "ssn": "1"}), {"id": n, "ssn": "[REDACTED]"})
        # nothing waits on the server for either: a bare result report (no token) finds nothing
        status, body = call(
            "POST", f"/v1/calls/{unreported.call_id}/result", bearer=token("alice"), body={"status": "ok"}
        )
        self.assertEqual(status, 404, body)
        [never] = [r for r in attempts("alice", "get_customer", customer_id=n) if r["call_id"] == unreported.call_id]
        self.assertEqual(never["outcome"], "unreported")
        [done] = outcomes("alice", "get_customer", reported.call_id)
        self.assertEqual(done["outcome"], "ok")

    def test_bad_token_is_denied_unauthenticated(self) -> None:
        with self.client.acting_as("not-a-jwt", agent="support-bot"):
            with self.assertRaises(Denied) as caught:
                self.lookup_order("o-1")
        self.assertEqual(caught.exception.reason_code, "unauthenticated")


REFUND_TASK = {
    "tools": ["lookup_order", {"tool": "issue_refund", "when": "args.order in task.orders && args.amount <= 50"}],
    "data": {"orders": ["o-1"]},
}


@needs_server
class CapabilityTests(unittest.TestCase):
    """Task-scoped capabilities: signed into the run's token by the control plane, only ever narrowed."""

    def setUp(self) -> None:
        self.tmp = TempDir()
        self.client = Client(URL, spool_path=self.tmp.join("spool.jsonl"))

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def test_a_run_may_do_what_its_task_needs_and_nothing_else(self) -> None:
        c = self.client
        agent = f"refund-bot-{nonce()}"
        with c.acting_as(token("alice"), agent=agent, capabilities=REFUND_TASK) as frame:
            self.assertEqual(frame.chain, (agent,))
            ok = c.check("issue_refund", {"order": "o-1", "amount": 20})
            self.assertEqual((ok.decision, ok.chain), ("allow", (agent,)))
            other = c.check("issue_refund", {"order": "o-2", "amount": 20})
            self.assertEqual((other.decision, other.reason_code), ("deny", "capability_deny"))
            self.assertEqual(c.check("get_customer", {"customer_id": "c-1"}).reason_code, "capability_deny")
        # the same human without capabilities: the tenant's policy alone
        with c.acting_as(token("alice"), agent=agent):
            self.assertEqual(c.check("get_customer", {"customer_id": "c-1"}).decision, "allow")

        def mine(records: list[dict]) -> list[dict]:
            return [r for r in records if r["agent"] == agent and r["kind"] in ("attempt", "delegation")]

        records = mine(audit_until(lambda rs: len(mine(rs)) >= 5, user="alice"))
        limited = [r for r in records if r["kind"] == "attempt" and r.get("capabilities")]
        self.assertEqual(len(limited), 3)
        self.assertEqual(len({r["capabilities"] for r in limited}), 1)
        self.assertTrue(limited[0]["capabilities"].startswith("sha256:"))
        delegation = [r for r in records if r["kind"] == "delegation"]
        self.assertEqual([r["chain"] for r in delegation], [[agent]])  # no hop added for the agent itself

    def test_a_delegate_cannot_widen_the_runs_capabilities(self) -> None:
        c = self.client
        wider = {"tools": ["get_customer", "lookup_order", {"tool": "issue_refund", "when": "true"}]}
        with c.acting_as(token("alice"), agent="planner", capabilities=REFUND_TASK):
            with c.delegate("helper", capabilities=wider) as helper:
                self.assertEqual(helper.chain, ("planner", "helper"))
                self.assertEqual(c.check("get_customer", {"customer_id": "c-1"}).reason_code, "capability_deny")
                self.assertEqual(c.check("issue_refund", {"order": "o-9", "amount": 1}).reason_code, "capability_deny")
                self.assertEqual(c.check("issue_refund", {"order": "o-1", "amount": 1}).decision, "allow")
            with c.delegate("narrower", capabilities={"tools": ["lookup_order"]}):
                self.assertEqual(c.check("issue_refund", {"order": "o-1", "amount": 1}).reason_code, "capability_deny")
                self.assertEqual(c.check("lookup_order", {"order_id": "o-1"}).decision, "allow")
            with c.delegate("inherits"):
                self.assertEqual(c.check("get_customer", {"customer_id": "c-1"}).reason_code, "capability_deny")

    def test_capabilities_the_control_plane_refuses_refuse_the_run(self) -> None:
        typo = {"tools": [{"tool": "issue_refund", "when": "args.amount <= taks.max"}]}
        with self.assertRaises(Denied) as caught:
            with self.client.acting_as(token("alice"), agent="bot", capabilities=typo):
                pass
        self.assertIn("authorization_details", caught.exception.reason)
        with self.assertRaises(ValueError):
            self.client.acting_as(token("alice"), agent="bot", capabilities={"tools": "everything"})
        with self.assertRaises(ValueError):
            self.client.delegate("helper", capabilities={"tools": [], "scope": "x"})

    def test_a_delegation_token_is_limited_with_delegate_not_acting_as(self) -> None:
        with self.client.acting_as(token("alice"), agent="planner"):
            with self.client.delegate("worker") as worker:
                delegated = worker.token
        with self.assertRaises(ValueError):
            with self.client.acting_as(delegated, agent="worker", capabilities=REFUND_TASK):
                pass


@needs_server
class DelegationTests(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = TempDir()
        self.client = Client(URL, spool_path=self.tmp.join("spool.jsonl"))

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def test_three_hops_are_signed_into_the_chain_and_audited(self) -> None:
        c = self.client
        n = nonce()

        @governed(c)
        def read_email(mailbox: str) -> list:
            return [{"subject": "hi"}]

        @governed(c)
        def get_customer(customer_id: str) -> dict:
            return {"id": customer_id}

        with c.acting_as(token("alice"), agent="planner", tier="interactive"):
            with c.delegate("researcher", scopes=["email.read", "customers:read"]):
                with c.delegate("analyst", tier="subagent"):
                    with c.delegate("specialist", scopes=["email.read"]) as frame:
                        self.assertEqual(frame.chain, ("planner", "researcher", "analyst", "specialist"))
                        self.assertEqual(onbehalf.current().scopes, ("email.read",))
                        self.assertEqual(read_email(n), [{"subject": "hi"}])
                        with self.assertRaises(Denied) as caught:
                            get_customer("c-1")  # customers:read was not delegated to the specialist
                    self.assertEqual(onbehalf.current().chain, ("planner", "researcher", "analyst"))
        self.assertIsNone(onbehalf.current())
        self.assertEqual(caught.exception.reason_code, "missing_scope")
        self.assertEqual(caught.exception.chain, ("planner", "researcher", "analyst", "specialist"))
        [attempt] = attempts("alice", "read_email", mailbox=n)
        self.assertEqual(attempt["chain"], ["planner", "researcher", "analyst", "specialist"])
        self.assertEqual(attempt["agent"], "specialist")
        self.assertEqual(attempt["tier"], "subagent")
        hops = [r["chain"] for r in audit(user="alice") if r["kind"] == "delegation" and r["chain"][:1] == ["planner"]]
        for hop in (["planner", "researcher"], ["planner", "researcher", "analyst"], ["planner", "researcher", "analyst", "specialist"]):
            self.assertIn(hop, hops)

    def test_the_first_hop_from_a_users_token_is_one_exchange_naming_the_bound_agent(self) -> None:
        root, helper = f"planner-{nonce()}", f"helper-{nonce()}"
        with self.client.acting_as(token("alice"), agent=root, tier="interactive"):
            with self.client.delegate(helper) as frame:
                self.assertEqual(self.client.check("lookup_order", {"order_id": "o"}).chain, (root, helper))
                self.assertEqual(frame.chain, (root, helper))

        def mine(records: list[dict]) -> list[dict]:
            return [r for r in records if r["kind"] == "delegation" and root in r["chain"]]

        [record] = mine(audit_until(mine, user="alice"))  # no separate exchange naming the root agent alone
        self.assertEqual((record["chain"], record["agent"], record["tier"]), ([root, helper], helper, "subagent"))

    def test_scopes_are_attenuated_not_widened(self) -> None:
        with self.client.acting_as(token("dave"), agent="bot"):
            with self.client.delegate("helper", scopes=["customers:read", "admin:everything"]) as frame:
                self.assertEqual(frame.scopes, ("customers:read",))

    def test_an_expiring_delegation_is_renewed_from_its_subject(self) -> None:
        with self.client.acting_as(token("alice"), agent="bot"):
            with self.client.delegate("helper") as frame:
                first = frame.token
                frame.expires_at = 0.0  # as if its 10 minutes were over
                self.assertEqual(self.client.check("lookup_order", {"order_id": "o"}).chain, ("bot", "helper"))
                self.assertNotEqual(frame.token, first)

    def test_the_first_hop_defaults_to_subagent_and_later_hops_keep_their_parents_tier(self) -> None:
        with self.client.acting_as(token("alice"), agent="bot", tier="interactive"):
            with self.client.delegate("helper") as helper:
                with self.client.delegate("worker", tier="background") as worker:
                    with self.client.delegate("sub") as sub:
                        self.assertEqual(self.client.check("lookup_order", {"order_id": "o"}).chain, ("bot", "helper", "worker", "sub"))
        self.assertEqual((helper.tier, worker.tier, sub.tier), ("subagent", "background", "background"))

    def test_delegate_needs_an_identity(self) -> None:
        with self.assertRaises(Denied) as caught:
            with self.client.delegate("helper"):
                pass
        self.assertEqual(caught.exception.reason_code, "no_identity")

    def test_bad_agent_names_and_tiers_are_refused(self) -> None:
        with self.assertRaises(ValueError):
            self.client.delegate("two words")
        with self.assertRaises(ValueError):
            self.client.acting_as(token("alice"), agent="bot", tier="superuser")


@needs_server
@needs_server
class ClientAuthenticationTests(unittest.TestCase):
    """An agent runtime registered as an OAuth client of /v1/token (acme's ``py-runtime``, which may act as
    ``planner`` and ``researcher``) authenticates with its secret; the delegation says so in its token and audit."""

    def setUp(self) -> None:
        self.tmp = TempDir()
        secret = os.environ["ONBEHALF_TEST_CLIENT_SECRET"]
        self.client = Client(URL, spool_path=self.tmp.join("spool.jsonl"), client_id="py-runtime", client_secret=secret)

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def test_a_registered_client_vouches_for_the_agents_it_delegates_to(self) -> None:
        with self.client.acting_as(token("alice"), agent="planner"):
            with self.client.delegate("researcher") as frame:
                act = json.loads(base64.urlsafe_b64decode(frame.token.split(".")[1] + "==="))["act"]
                self.assertEqual(act["sub"], "researcher")
                self.assertEqual(act["client_id"], "py-runtime")
                self.assertEqual(act["act"], {"sub": "planner", "client_id": "py-runtime"})
                trace = frame.trace_id

        def mine(records: list) -> list:
            return [r for r in records if r["kind"] == "delegation" and r["trace_id"] == trace]

        [record] = mine(audit_until(mine, user="alice"))
        self.assertEqual(record["args"]["client_id"], "py-runtime")
        self.assertIs(record["args"]["client_authenticated"], True)
        self.assertEqual(record["args"]["clients"], ["py-runtime", "py-runtime"])

    def test_a_registered_client_may_not_act_as_an_agent_it_is_not_registered_for(self) -> None:
        with self.client.acting_as(token("alice"), agent="planner"):
            with self.assertRaises(Denied) as caught:
                with self.client.delegate("intruder"):
                    pass
        self.assertIn("may not act as agent intruder", str(caught.exception))

    def test_a_wrong_secret_is_refused_as_the_client_not_the_human(self) -> None:
        wrong = Client(URL, spool_path=self.tmp.join("other.jsonl"), client_id="py-runtime", client_secret="not-it")
        with wrong.acting_as(token("alice"), agent="planner"):
            with self.assertRaises(Denied) as caught:
                with wrong.delegate("researcher"):
                    pass
        self.assertNotIsInstance(caught.exception, Unauthenticated)
        self.assertIn("invalid_client", str(caught.exception))


class TraceTests(unittest.TestCase):
    """One run, one trace id: generated when the caller gives none, kept by delegations, on every record."""

    def setUp(self) -> None:
        self.tmp = TempDir()
        self.client = Client(URL, spool_path=self.tmp.join("spool.jsonl"))

    def tearDown(self) -> None:
        onbehalf.clear_context()
        self.tmp.cleanup()

    def test_a_run_gets_a_w3c_trace_id_that_its_checks_and_delegations_carry(self) -> None:
        c, n = self.client, nonce()
        with c.acting_as(token("alice"), agent="planner") as root:
            first = c.check("lookup_order", {"order_id": n})
            with c.delegate("researcher") as researcher:
                second = c.check("lookup_order", {"order_id": n})
                with c.delegate("analyst", tier="background") as analyst:
                    third = c.check("lookup_order", {"order_id": n})
        trace = root.trace_id
        self.assertRegex(trace, W3C_TRACE_ID)
        self.assertEqual((researcher.trace_id, analyst.trace_id), (trace, trace))
        self.assertEqual([d.trace_id for d in (first, second, third)], [trace] * 3)  # as the control plane answered
        records = run_records(trace, 5, user="alice")
        self.assertEqual(
            [(r["kind"], r["chain"]) for r in records if r["kind"] in ("attempt", "delegation")],
            [
                ("attempt", ["planner"]),
                ("delegation", ["planner", "researcher"]),
                ("attempt", ["planner", "researcher"]),
                ("delegation", ["planner", "researcher", "analyst"]),
                ("attempt", ["planner", "researcher", "analyst"]),
            ],
        )
        of_run = [r for r in audit(user="alice", tool="lookup_order") if (r.get("args") or {}).get("order_id") == n]
        self.assertEqual({r["trace_id"] for r in of_run}, {trace})

    def test_each_run_has_its_own_and_set_context_starts_one_too(self) -> None:
        with self.client.acting_as(token("alice"), agent="bot") as a:
            pass
        with self.client.acting_as(token("alice"), agent="bot") as b:
            pass
        bound = onbehalf.set_context(token("alice"), agent="bot")
        self.assertEqual(onbehalf.current().trace_id, bound.trace_id)
        traces = [a.trace_id, b.trace_id, bound.trace_id]
        for t in traces:
            self.assertRegex(t, W3C_TRACE_ID)
        self.assertEqual(len(set(traces)), 3)

    def test_a_callers_own_trace_id_is_kept_through_delegations(self) -> None:
        c, mine = self.client, f"req-{nonce()}"
        with c.acting_as(token("alice"), agent="bot", trace_id=mine):
            with c.delegate("helper") as helper:
                self.assertEqual(c.check("lookup_order", {"order_id": "o"}).trace_id, mine)
        self.assertEqual(helper.trace_id, mine)
        records = run_records(mine, 2, user="alice")
        self.assertEqual([r["kind"] for r in records if r["kind"] != "outcome"], ["delegation", "attempt"])

    def test_a_worker_that_binds_a_delegation_token_continues_the_run(self) -> None:
        c = self.client
        with c.acting_as(token("alice"), agent="planner") as root:
            with c.delegate("worker") as handed:
                worker_token = handed.token
        seen: list = []

        def worker() -> None:  # another thread (or process): nothing inherited but the token
            with Client(URL, spool_path=None).acting_as(worker_token, agent="ignored") as frame:
                seen.append((frame.chain, frame.trace_id))

        thread = threading.Thread(target=contextvars.Context().run, args=(worker,))
        thread.start()
        thread.join()
        self.assertEqual(seen, [(("planner", "worker"), root.trace_id)])

    def test_trace_ids_the_control_plane_cannot_store_are_refused(self) -> None:
        for bad in ("", "a\nb", "x" * 201, 42):
            with self.assertRaises(ValueError, msg=repr(bad)):
                self.client.acting_as(token("alice"), agent="bot", trace_id=bad)  # type: ignore[arg-type]


@needs_server
@unittest.skipIf(otel_trace is None, "needs the OpenTelemetry API: the real-AutoGen run of npm test has it")
class OpenTelemetryTests(unittest.TestCase):
    def test_the_active_span_gives_the_run_its_trace_id(self) -> None:
        client = Client(URL, spool_path=None)
        trace_id = uuid.uuid4().hex
        span = otel_trace.NonRecordingSpan(
            otel_trace.SpanContext(int(trace_id, 16), 0x00F067AA0BA902B7, is_remote=True, trace_flags=otel_trace.TraceFlags(1))
        )
        with otel_trace.use_span(span):
            with client.acting_as(token("alice"), agent="bot") as frame:
                decision = client.check("lookup_order", {"order_id": "o"})
            with client.acting_as(token("alice"), agent="bot", trace_id="req-1") as own:
                pass
        with client.acting_as(token("alice"), agent="bot") as outside:
            pass
        self.assertEqual((frame.trace_id, decision.trace_id), (trace_id, trace_id))
        self.assertEqual(own.trace_id, "req-1")  # a caller's own wins
        self.assertNotEqual(outside.trace_id, trace_id)
        self.assertEqual([r["tool"] for r in run_records(trace_id, 1, kind="attempt", user="alice")], ["lookup_order"])


@needs_server
class TierTests(unittest.TestCase):
    """A hop may name any tier; a call is decided under every tier of its chain, the strictest winning.

    The test control plane lets no ``subagent`` wire money, and lets ``interactive`` and ``background`` runs.
    """

    def setUp(self) -> None:
        self.tmp = TempDir()
        self.client = Client(URL, spool_path=self.tmp.join("spool.jsonl"))
        c = self.client

        @governed(c)
        def wire_money(to: str, amount: int) -> dict:
            return {"to": to, "sent": amount}

        self.wire_money = wire_money

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def test_a_three_hop_chain_interactive_subagent_background_is_decided_under_all_three_in_one_trace(self) -> None:
        c, n = self.client, nonce()
        denied: list[Denied] = []
        with c.acting_as(token("alice"), agent="orchestrator", tier="interactive") as root:
            self.assertEqual(self.wire_money(f"root-{n}", 1), {"to": f"root-{n}", "sent": 1})
            with c.delegate("worker", tier="subagent") as worker:
                with self.assertRaises(Denied) as caught:
                    self.wire_money(f"worker-{n}", 1)
                denied.append(caught.exception)
                # The orchestrator's own tier is signed into the chain too, not only the worker's.
                payload = worker.token.split(".")[1]
                claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                self.assertEqual(claims["tiers"], ["interactive", "subagent"])
                with c.delegate("nightly", tier="background") as nightly:
                    with self.assertRaises(Denied) as caught:
                        self.wire_money(f"nightly-{n}", 1)  # background may, but a hop of its chain is a subagent
                    denied.append(caught.exception)
                    with c.delegate("escalator", tier="interactive"):  # naming a looser tier loosens nothing
                        with self.assertRaises(Denied) as caught:
                            self.wire_money(f"escalator-{n}", 1)
                        denied.append(caught.exception)
        self.assertEqual((worker.tier, nightly.tier), ("subagent", "background"))
        self.assertEqual([d.reason_code for d in denied], ["permission_deny"] * 3)
        self.assertEqual(denied[1].chain, ("orchestrator", "worker", "nightly"))
        with c.acting_as(token("alice"), agent="nightly", tier="background"):
            self.assertEqual(self.wire_money(f"alone-{n}", 1)["sent"], 1)  # background alone may

        records = run_records(root.trace_id, 4, kind="attempt", user="alice")
        self.assertEqual(
            [(r["args"]["to"], r["chain"], r["tier"], r["decision"]) for r in records],
            [
                (f"root-{n}", ["orchestrator"], "interactive", "allow"),
                (f"worker-{n}", ["orchestrator", "worker"], "subagent", "deny"),
                (f"nightly-{n}", ["orchestrator", "worker", "nightly"], "background", "deny"),
                (f"escalator-{n}", ["orchestrator", "worker", "nightly", "escalator"], "interactive", "deny"),
            ],
        )


@needs_server
class SeedPatternTests(unittest.TestCase):
    """``user = onbehalf.verify(...)``, ``onbehalf.set_context(...)``, bare ``@governed``."""

    def setUp(self) -> None:
        self.tmp = TempDir()
        self.saved = {k: os.environ.get(k) for k in ("ONBEHALF_URL", "ONBEHALF_SPOOL")}
        os.environ["ONBEHALF_URL"] = URL
        os.environ["ONBEHALF_SPOOL"] = self.tmp.join("spool.jsonl")
        onbehalf.configure(None)

    def tearDown(self) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        onbehalf.configure(None)
        self.tmp.cleanup()

    def test_three_lines(self) -> None:
        @governed
        def get_customer(customer_id: str) -> dict:
            return {"id": customer_id, "ssn": "078-05-1120"}

        headers = {"authorization": f"Bearer {token('alice')}"}
        result: dict = {}

        def request_handler() -> None:  # a request thread of a web app
            user = onbehalf.verify(headers["authorization"])
            result["user"] = user
            onbehalf.set_context(user.token, agent="support-bot", tier="interactive")
            result["out"] = get_customer("c-1")

        t = threading.Thread(target=request_handler)
        t.start()
        t.join()
        user = result["user"]
        self.assertEqual((user.sub, user.user, user.tenant, user.email), ("alice", "alice", "acme", "alice@acme.test"))
        self.assertIn("customers:read", user.scopes)
        self.assertEqual(user.token, token("alice"))
        self.assertNotIn(token("alice"), repr(user))
        self.assertEqual(result["out"], {"id": "c-1", "ssn": "[REDACTED]"})
        self.assertIsNone(onbehalf.current())  # set_context in that thread did not leak here

    def test_verify_refuses_bad_tokens(self) -> None:
        for header in (None, "", "Bearer ", "Bearer not-a-jwt"):
            with self.assertRaises(Unauthenticated):
                onbehalf.verify(header)

    def test_verify_with_the_control_plane_down_is_unavailable(self) -> None:
        with self.assertRaises(Unavailable) as caught:
            Client(f"http://127.0.0.1:{free_port()}", spool_path=None).verify(f"Bearer {token('alice')}")
        self.assertEqual(caught.exception.reason_code, "fail_closed")

    def test_no_url_configured(self) -> None:
        os.environ.pop("ONBEHALF_URL")
        onbehalf.configure(None)

        @governed
        def f() -> int:
            return 1

        with self.assertRaises(onbehalf.ConfigurationError) as caught:
            f()
        self.assertIn("ONBEHALF_URL", str(caught.exception))


@needs_server
class ApprovalTests(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = TempDir()

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def _refund(self, client: Client):
        @governed(client, name="issue_refund")
        def refund(order: str, amount: int) -> dict:
            return {"order": order, "refunded": amount}

        return refund

    def _decide_in_thread(self, order: str, decision: str) -> threading.Thread:
        def approver() -> None:
            def pending():
                status, body = call("GET", "/v1/approvals?status=pending", bearer=ADMIN)
                return [a for a in body["approvals"] if (a.get("args") or {}).get("order") == order]

            [approval] = wait_for(pending, what=f"the approval of {order}")
            status, body = call("POST", f"/v1/approvals/{approval['id']}", bearer=ADMIN, body={"decision": decision, "note": "checked"})
            assert status == 200, body

        t = threading.Thread(target=approver)
        t.start()
        return t

    def test_waits_for_approval_then_runs_and_reports_with_the_original_call_id(self) -> None:
        client = Client(URL, spool_path=self.tmp.join("s"), approval_timeout=20)
        order = nonce()
        t = self._decide_in_thread(order, "approve")
        with client.acting_as(token("bob"), agent="support-bot"):
            self.assertEqual(self._refund(client)(order, 900), {"order": order, "refunded": 900})
        t.join()
        def mine(records: list[dict]) -> list[dict]:
            return [r for r in records if (r.get("args") or {}).get("order") == order]

        records = mine(audit_until(lambda rs: len(mine(rs)) == 4, user="bob", tool="issue_refund"))
        kinds = sorted((r["kind"], r["decision"]) for r in records)
        # asked; approved; asked again with the approval and decided under the policy in force; ran
        self.assertEqual(
            kinds, [("approval", "allow"), ("attempt", "allow"), ("attempt", "ask"), ("outcome", "allow")]
        )
        self.assertEqual(len({r["call_id"] for r in records}), 1)

    def test_a_revocation_after_the_approval_wins_over_it(self) -> None:
        client = Client(URL, spool_path=self.tmp.join("s"))
        order = nonce()
        ran: list[str] = []

        @governed(client, name="issue_refund")
        def refund(order: str, amount: int) -> dict:
            ran.append(order)
            return {"order": order, "refunded": amount}

        with client.acting_as(token("bob"), agent="support-bot"):
            with self.assertRaises(ApprovalRequired) as caught:
                refund(order, 900)
            status, _ = call("POST", f"/v1/approvals/{caught.exception.approval_id}", bearer=ADMIN, body={"decision": "approve"})
            self.assertEqual(status, 200)
            revoke = {"users": {"bob": {"*": {"permission": "deny"}}}}
            status, _ = call("PATCH", "/v1/admin/tenants/acme/policy", bearer=ADMIN, body=revoke)
            self.assertEqual(status, 200)
            try:
                with self.assertRaises(Denied) as denied:
                    client.wait_for_approval(caught.exception.decision, timeout=5)
            finally:
                call("PATCH", "/v1/admin/tenants/acme/policy", bearer=ADMIN, body={"users": {"bob": None}})
        self.assertEqual(denied.exception.reason_code, "permission_deny")
        self.assertEqual(ran, [])

    def test_an_approval_lets_one_call_through(self) -> None:
        client = Client(URL, spool_path=self.tmp.join("s"))
        with client.acting_as(token("bob"), agent="support-bot"):
            with self.assertRaises(ApprovalRequired) as caught:
                self._refund(client)(nonce(), 900)
            status, _ = call("POST", f"/v1/approvals/{caught.exception.approval_id}", bearer=ADMIN, body={"decision": "approve"})
            self.assertEqual(status, 200)
            first = client.wait_for_approval(caught.exception.decision, timeout=5)
            self.assertEqual(first.decision, "allow")
            with self.assertRaises(Denied) as again:
                client.wait_for_approval(caught.exception.decision, timeout=5)
        self.assertEqual(again.exception.reason_code, "approval_required")

    def test_denied_approval(self) -> None:
        client = Client(URL, spool_path=self.tmp.join("s"), approval_timeout=20)
        order = nonce()
        t = self._decide_in_thread(order, "deny")
        with client.acting_as(token("bob"), agent="support-bot"):
            with self.assertRaises(Denied) as caught:
                self._refund(client)(order, 900)
        t.join()
        self.assertEqual(caught.exception.reason_code, "approval_denied")
        self.assertIn("checked", caught.exception.reason)

    def test_expired_approval(self) -> None:
        client = Client(URL, spool_path=self.tmp.join("s"), approval_timeout=APPROVAL_TTL + 5)
        with client.acting_as(token("bob"), agent="support-bot"):
            with self.assertRaises(Denied) as caught:
                self._refund(client)(nonce(), 900)
        self.assertEqual(caught.exception.reason_code, "approval_expired")

    def test_approval_timeout_zero_raises_approval_required_at_once(self) -> None:
        client = Client(URL, spool_path=self.tmp.join("s"))
        with client.acting_as(token("bob"), agent="support-bot"):
            with self.assertRaises(ApprovalRequired) as caught:
                self._refund(client)(nonce(), 900)
            self.assertTrue(caught.exception.approval_id.startswith("apr_"))
            # the caller can come back later: wait_for_approval on the decision
            d = caught.exception.decision
            with self.assertRaises(ApprovalRequired):
                client.wait_for_approval(d, timeout=0.3)


if __name__ == "__main__":
    unittest.main()
