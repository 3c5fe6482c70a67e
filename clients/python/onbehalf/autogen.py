"""AutoGen integration: a governed workbench and governed hand-offs.

``GovernedWorkbench`` wraps any ``autogen_core.tools.Workbench`` (a ``StaticWorkbench`` of your tools, an
``McpWorkbench``): every ``call_tool`` is checked with the control plane for the bound human first; a denial
comes back as an error ``ToolResult`` carrying the reason, so the model sees why; allowed calls run, their
result is reported and handed back as policy lets it out (redacted, or withheld).

``governed_handoff`` makes an AgentChat hand-off whose tool is governed: the hand-off itself is checked and
audited, and it delegates to the target agent (RFC 8693 exchange), so the target's governed calls carry the
extended, server-signed chain. AssistantAgent runs hand-off tools outside its workbench, which is why they need
their own wrapper.

Example::

    from onbehalf import Client
    from onbehalf.autogen import GovernedWorkbench, governed_handoff

    client = Client("http://127.0.0.1:8787")
    triage = AssistantAgent("triage", model_client=model,
                            workbench=GovernedWorkbench(StaticWorkbench([lookup_tool]), client),
                            handoffs=[governed_handoff("billing", client, scopes=["refunds:write"])])
    billing = AssistantAgent("billing", model_client=model,
                             workbench=GovernedWorkbench(StaticWorkbench([refund_tool]), client, agent="billing"))
    async with client.acting_as(user_token, agent="triage", tier="interactive"):
        await Swarm([triage, billing], termination_condition=...).run(task="...")

Identity reaches every speaker because AutoGen's runtime tasks are created inside ``team.run()`` and copy the
context; see docs/autogen.md for where that stops (a runtime started elsewhere, the gRPC worker runtime).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import time
from typing import Any, List, Mapping, Sequence

_INSTALL = (
    "onbehalf.autogen needs AutoGen 0.4 or newer (GovernedWorkbench uses autogen_core.tools.Workbench, which "
    'autogen-core has since 0.5). Install it with: pip install "autogen-core>=0.4" "autogen-agentchat>=0.4"'
)

try:
    from autogen_core import CancellationToken
    from autogen_core.tools import FunctionTool, TextResultContent, ToolResult, ToolSchema, Workbench
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(_INSTALL) from e

from .bindings import default_client
from .client import Client
from .context import RunContext, RunState, current, refused_context, validate_agent, validate_tier
from .decisions import Decision
from .delegations import _scopes
from .errors import ApprovalRequired, Denied, OnbehalfError
from .governed import _reportable, _reshaped

log = logging.getLogger("onbehalf")

__all__ = ["GovernedWorkbench", "governed_handoff"]


class GovernedWorkbench(Workbench):
    """A workbench whose every tool call is decided by the control plane for the bound human.

    Args:
        inner: the workbench that really runs the tools.
        client: the onbehalf client (default: ``onbehalf.default_client()`` at call time).
        agent: the agent this workbench belongs to. ``None`` (default): calls go out as the bound identity, or
            as the target of the latest governed hand-off in this run. A name: calls go out as that agent,
            through the delegation a governed hand-off made to it, else through a delegation from the bound
            identity made on first use (``scopes``, ``tier``): give each agent of a group chat its own workbench
            and each one's calls carry its own signed chain.
        scopes: scopes requested for that first-use delegation (``None``: all the subject's).
        tier: tier of that delegation (default: ``subagent``, or the tier of the delegation it extends).
        approval_timeout: seconds to wait for a human when policy says ``ask`` (default: the client's).

    A denied call returns ``ToolResult(is_error=True)`` whose text says ``Denied by onbehalf (<reason_code>):
    <reason>``; the inner workbench is not called. ``dump_component()`` is not supported: a serialized
    workbench would lose its governance.
    """

    component_type = "workbench"

    def __init__(
        self,
        inner: Workbench,
        client: Client | None = None,
        *,
        agent: str | None = None,
        scopes: Sequence[str] | str | None = None,
        tier: str | None = None,
        approval_timeout: float | None = None,
    ) -> None:
        super().__init__()
        if agent is not None:
            validate_agent(agent, strict=True)
        if tier is not None:
            validate_tier(tier)
        self._inner = inner
        self._client = client
        self._agent = agent
        self._scopes = _scopes(scopes)
        self._tier = tier
        self._approval_timeout = approval_timeout
        try:
            params = inspect.signature(inner.call_tool).parameters
            self._inner_takes_call_id = "call_id" in params or any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
            )
        except (TypeError, ValueError):
            self._inner_takes_call_id = False

    @property
    def inner(self) -> Workbench:
        return self._inner

    async def list_tools(self) -> List[ToolSchema]:
        return await self._inner.list_tools()

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        args = dict(arguments or {})
        try:
            client = self._client or default_client()
            context = await _context_for(client, self._agent, self._scopes, self._tier)
            timeout = client.approval_timeout if self._approval_timeout is None else self._approval_timeout
            decision = await asyncio.to_thread(_decide_within, client, context, name, args, timeout)
        except Denied as d:
            return _refusal(name, d)
        except (OnbehalfError, ValueError) as e:
            return _refusal(name, Denied("error", str(e), tool=name))
        started = time.monotonic()
        try:
            if self._inner_takes_call_id:
                result = await self._inner.call_tool(name, arguments, cancellation_token, call_id=call_id)
            else:
                result = await self._inner.call_tool(name, arguments, cancellation_token)
        except asyncio.CancelledError:
            _report_later(client, decision, "cancelled", started)
            raise
        except BaseException as e:
            await asyncio.to_thread(_report_quietly, client, decision, None, _describe(e), started)
            raise
        texts = [(i, c.content) for i, c in enumerate(result.result) if isinstance(c, TextResultContent)]
        parts = [_part(t, decision) for _, t in texts]
        values = [value for value, _ in parts]
        output: Any = values[0] if len(values) == 1 else values
        if result.is_error:
            # What the error says is shown to the model too: redacted (or withheld) like any output.
            error = "\n".join(t for _, t in texts) or "tool error"
            try:
                shown = await asyncio.to_thread(
                    client.report, decision, output, error=error, latency_us=_micros(started)
                )
            except Denied as d:
                return _refusal(name, d)
            if shown is None or shown is output:
                return result
            return _rebuilt(result, texts, parts, shown)
        try:
            shown = await asyncio.to_thread(client.report, decision, output, latency_us=_micros(started))
        except Denied as d:
            return _refusal(name, d)
        if shown is output:
            return result
        return _rebuilt(result, texts, parts, shown)

    async def start(self) -> None:
        await self._inner.start()

    async def stop(self) -> None:
        await self._inner.stop()

    async def reset(self) -> None:
        await self._inner.reset()

    async def save_state(self) -> Mapping[str, Any]:
        return await self._inner.save_state()

    async def load_state(self, state: Mapping[str, Any]) -> None:
        await self._inner.load_state(state)

    def _to_config(self) -> Any:
        raise NotImplementedError(
            "GovernedWorkbench cannot be serialized: a workbench loaded from config would run ungoverned. "
            "Serialize the inner workbench and wrap it again after loading."
        )


def governed_handoff(
    target: str,
    client: Client | None = None,
    *,
    scopes: Sequence[str] | str | None = None,
    tier: str | None = None,
    description: str | None = None,
    name: str | None = None,
    message: str | None = None,
    check: bool = True,
    raise_on_denied: bool = False,
) -> Any:
    """An AgentChat ``Handoff`` to ``target`` whose tool is governed and extends the chain.

    When the model calls the hand-off tool, the client (1) checks the hand-off as a tool call named after the
    hand-off (``transfer_to_<target>``, args ``{target, message}``) unless ``check=False``; (2) delegates to
    ``target`` with ``scopes`` and ``tier`` (``POST /v1/token``): the control plane signs the extended chain,
    with the tier of every hop, and the delegation keeps the run's trace id; (3) records that delegation in the
    run, so the target's ``GovernedWorkbench`` calls carry it.

    ``tier`` is the target's tier: ``subagent`` by default for the first hop from the human's own token, the
    tier of the hop it extends after that. Any tier may be named: a call is decided under every tier of its
    chain, the strictest winning, so a hand-off can only narrow what the run may do.

    AssistantAgent hands off whatever the tool returns, so a refused hand-off cannot be stopped by a return
    value: instead the target is recorded as refused for this run, and every governed call it makes is refused
    with the reason, each one still sent to the control plane (``client_refusal``), which audits it as a denied
    attempt; the hand-off message says so. ``raise_on_denied=True`` raises ``Denied`` instead, which ends the
    agent's turn (and the team run) with an error.

    Example::

        AssistantAgent("triage", model_client=model, workbench=...,
                       handoffs=[governed_handoff("billing", client, scopes=["refunds:write"])])
    """
    try:
        from autogen_agentchat.base import Handoff
    except ImportError as e:  # pragma: no cover
        raise ImportError(_INSTALL) from e
    validate_agent(target, strict=True)
    if tier is not None:
        validate_tier(tier)
    wanted = _scopes(scopes)
    fields: dict[str, Any] = {"target": target}
    for key, value in (("description", description), ("name", name), ("message", message)):
        if value is not None:
            fields[key] = value

    class GovernedHandoff(Handoff):  # type: ignore[misc, valid-type]
        """A hand-off whose tool is governed by onbehalf (see ``governed_handoff``)."""

        @property
        def handoff_tool(self) -> Any:  # type: ignore[override]
            return FunctionTool(
                _handoff_function(self, target, client, wanted, tier, check, raise_on_denied),
                name=self.name,
                description=self.description,
            )

    return GovernedHandoff(**fields)


def _handoff_function(
    handoff: Any,
    target: str,
    client: Client | None,
    scopes: tuple[str, ...] | None,
    tier: str | None,
    check: bool,
    raise_on_denied: bool,
) -> Any:
    async def handoff_tool() -> str:
        context = current()
        subject: RunContext | None = None
        try:
            c = client or default_client()
            args = {"target": target, "message": handoff.message}
            if context is None:
                if check:  # sent without a token: the control plane audits an anonymous attempt
                    await asyncio.to_thread(_decide_within, c, None, handoff.name, args, 0)
                raise Denied(
                    "no_identity", "no identity is bound: the hand-off cannot act for anyone", tool=handoff.name
                )
            base = _active(context)
            # Leaving an agent whose hand-off was refused: act from the last context that was authorized.
            subject = base.parent if base.denied is not None and base.parent is not None else base
            decision: Decision | None = None
            if check or subject.denied is not None:  # a refused agent's hand-off is refused, as an audited attempt
                decision = await asyncio.to_thread(_decide_within, c, subject, handoff.name, args, c.approval_timeout)
            if subject.agent == target:
                child = subject  # back to the agent that holds this context
            else:
                child = await asyncio.to_thread(c._delegate_context, subject, target, scopes, tier)
            if decision is not None:
                await asyncio.to_thread(_report_quietly, c, decision, handoff.message, None, time.monotonic())
        except (Denied, OnbehalfError, ValueError) as e:
            d = e if isinstance(e, Denied) else Denied("error", str(e), tool=handoff.name)
            if context is not None:
                parent = subject or _active(context)
                refusal = Denied(d.reason_code, f"the hand-off to {target} was refused: {d.reason}")
                _record_handoff(context.run, target, refused_context(parent, target, tier, refusal))
            if raise_on_denied:
                raise d from None
            return (
                f"Hand-off to {target} denied by onbehalf ({d.reason_code}): {d.reason}. "
                f"{target} may not act for this user; its governed tools will refuse."
            )
        _record_handoff(context.run, target, child)
        return str(handoff.message)

    return handoff_tool


# -- the run contexts of a run --------------------------------------------------------------------------------

def _active(context: RunContext) -> RunContext:
    """The run context calls go out under: the latest governed hand-off's, when bound at the run's root."""
    run = context.run
    if run.root is context:
        with run.lock:
            if run.handoff is not None:
                return run.handoff
    return context


async def _context_for(
    client: Client, agent: str | None, scopes: tuple[str, ...] | None, tier: str | None
) -> RunContext | None:
    """The run context a workbench's call goes out under; ``None`` when no identity is bound.

    A first-use delegation to ``agent`` that the control plane refuses makes ``agent`` refused for the run, like
    a refused hand-off: its calls are refused, each as an audited attempt.
    """
    context = current()
    if context is None:
        return None
    base = _active(context)
    if agent is None or base.agent == agent:
        return base
    if base.denied is not None:  # while the run is with an agent whose hand-off was refused: refused too
        return refused_context(base, agent, tier, base.denied)
    run = context.run
    key = agent if run.root is context else f"{id(context)}:{agent}"
    with run.lock:
        known = run.agents.get(key)
    if known is not None:
        return known
    try:
        child = await asyncio.to_thread(client._delegate_context, base, agent, scopes, tier)
    except Denied as d:
        refusal = Denied(d.reason_code, f"the delegation to {agent} was refused: {d.reason}")
        child = refused_context(base, agent, tier, refusal)
    with run.lock:
        return run.agents.setdefault(key, child)


def _record_handoff(run: RunState, target: str, context: RunContext) -> None:
    with run.lock:
        run.handoff = context
        run.agents[target] = context


# -- results --------------------------------------------------------------------------------------------------


_NO_IDENTITY = (
    "no identity is bound: run the team inside client.acting_as(token, agent=..., tier=...) "
    "(see docs/autogen.md: a runtime started outside the run does not see it)"
)


def _decide_within(
    client: Client, context: RunContext | None, tool: str, args: Mapping[str, Any], timeout: float
) -> Decision:
    if context is None:
        try:
            client._decide(None, tool, args)  # sent without a token, so the control plane audits the attempt
        except Denied as d:
            raise Denied("no_identity", _NO_IDENTITY, tool=tool) from d
    decision = client._decide(context, tool, args)
    if decision.decision == "ask":
        decision = client._resolve_ask(decision, timeout)
    if decision.decision != "allow":
        raise Denied.from_decision(decision)
    return decision


def _refusal(name: str, d: Denied) -> ToolResult:
    if isinstance(d, ApprovalRequired):
        text = f"Not run: waiting for a human to approve this call (approval {d.approval_id}). {d.reason}"
    else:
        text = f"Denied by onbehalf ({d.reason_code}): {d.reason}"
    return ToolResult(name=name, result=[TextResultContent(content=text)], is_error=True)


def _part(text: str, decision: Decision) -> tuple[Any, str]:
    """A text part as reported, and its shape (``json``, ``repr`` or ``text``) to give the model it back in.

    JSON is reported parsed. A Python repr (``FunctionTool`` hands the model ``str(dict)``) is parsed with
    ``ast.literal_eval`` when the output is redacted, so its fields can be. Other text is reported as text: the
    control plane withholds it when it cannot check it for the fields it redacts.
    """
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.loads(stripped), "json"
        except ValueError:
            pass
    value, shape = _reportable(text, decision)
    return value, "repr" if shape == "repr" else "text"


def _rebuilt(result: ToolResult, texts: list, parts: list, shown: Any) -> ToolResult:
    """The tool result with its text parts replaced by what policy lets the model see, each in its shape."""
    if len(parts) == 1:
        new_values: list = [shown]
    elif isinstance(shown, list) and len(shown) == len(parts):
        new_values = shown
    else:
        new_values = [shown] + [""] * (len(parts) - 1)
    items = list(result.result)
    for (index, _), (_, shape), value in zip(texts, parts, new_values):
        items[index] = TextResultContent(content=_as_text(value, shape))
    return ToolResult(name=result.name, result=items, is_error=result.is_error)


def _as_text(value: Any, shape: str) -> str:
    if isinstance(value, str):
        return value
    return _reshaped(value, "repr") if shape == "repr" else json.dumps(value)


def _report_quietly(client: Client, decision: Decision, output: Any, error: str | None, started: float) -> None:
    try:
        client.report(decision, output, error=error, latency_us=_micros(started))
    except Exception as e:  # noqa: BLE001 - the call's own outcome is what the caller sees
        log.warning("onbehalf: could not report call %s: %s", decision.call_id, e)


def _report_later(client: Client, decision: Decision, error: str, started: float) -> None:
    threading.Thread(
        target=_report_quietly, args=(client, decision, None, error, started), name="onbehalf-report", daemon=True
    ).start()


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _micros(started: float) -> int:
    return int((time.monotonic() - started) * 1_000_000)
