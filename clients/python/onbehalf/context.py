"""Who the current code acts for: one :class:`contextvars.ContextVar` holding a :class:`RunContext`.

A run context is bound by ``client.acting_as(...)`` (a human's token), ``client.delegate(...)`` (a delegation token
the control plane signed for one more agent) or ``onbehalf.set_context(...)``. Context variables follow the
code: each thread has its own, and every asyncio task gets a copy of the context it was created in, so a
binding made before ``team.run()`` reaches every task the run creates — and a binding made in one task never
leaks into another.

Every binding belongs to a run, and every run has a trace id (``RunContext.trace_id``): the caller's, the one a
delegation token carries, the active OpenTelemetry span's, or a new random one (W3C format). Delegations keep it,
so every audit record of a run carries the same one.

Example::

    with client.acting_as(token, agent="support-bot", tier="interactive"):
        print(onbehalf.current().chain)      # ('support-bot',)
        print(onbehalf.current().trace_id)   # '4bf92f3577b34da6a3ce929d0e0e4736'
"""

from __future__ import annotations

import base64
import contextvars
import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

from ._trace import checked_trace_id, new_trace_id

if TYPE_CHECKING:
    from .errors import Denied

TIERS = ("interactive", "subagent", "background", "api")

_current: contextvars.ContextVar["RunContext | None"] = contextvars.ContextVar("onbehalf_run", default=None)


@dataclass(eq=False)
class RunState:
    """Shared by every run context of one ``acting_as`` binding: what hand-offs did during the run.

    AutoGen runs each speaker in its own task, so a hand-off cannot rebind the next speaker's context variable;
    it records the delegation here instead, where the next speaker's workbench finds it.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    root: "RunContext | None" = None
    handoff: "RunContext | None" = None  # the context of the agent the latest governed hand-off went to
    agents: dict[str, "RunContext"] = field(default_factory=dict)  # agent name -> its context in this run


@dataclass(eq=False)
class RunContext:
    """The run as one agent of it sees it: the token it acts with, the agent, its tier and the chain of agents up
    to it. One is bound per ``acting_as`` / ``set_context`` and per ``delegate``; TypeScript calls the same thing
    ``RunContext``. (``Frame``, its former name, is kept as an alias.)

    ``token`` is ``None`` while a delegation could not be exchanged yet (control plane unreachable when the
    block was entered); the client retries the exchange on the next call and meanwhile acts on the fail mode
    with the parent's token. ``denied`` is set on the context of an agent whose hand-off (or delegation) was
    refused: it has no token of its own, and every governed call made as that agent is refused — after being
    sent to the control plane as a refused attempt (``client_refusal``), so that the audit shows it.
    ``trace_id`` is the run's trace id, the same in every context of the run.
    """

    token: str | None
    agent: str
    tier: str
    chain: tuple[str, ...]
    run: RunState
    parent: "RunContext | None" = None
    scopes: tuple[str, ...] | None = None  # granted scopes of a delegation; None: the subject's
    requested_scopes: tuple[str, ...] | None = None
    trace_id: str | None = None
    expires_at: float | None = None  # monotonic clock; delegations only
    denied: "Denied | None" = None
    # the task capabilities this hop asks for (RFC 9396 ``authorization_details`` entry); None: the parent's alone
    capabilities: "dict[str, Any] | None" = None
    # True for ``acting_as(..., capabilities=...)``: the same agent as its parent (the human's own token), whose
    # token is exchanged for one carrying the capabilities; it adds no hop to the chain
    restates: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __repr__(self) -> str:  # never print a token
        state = "pending" if self.token is None else "bound"
        return f"RunContext(agent={self.agent!r}, tier={self.tier!r}, chain={self.chain!r}, {state})"

    @property
    def is_delegation(self) -> bool:
        return self.parent is not None and not self.restates

    @property
    def limited(self) -> bool:
        """Whether this context or one it came from has task capabilities (only the control plane evaluates them)."""
        return any(c.capabilities is not None for c in self.ancestors())

    def ancestors(self) -> Iterator["RunContext"]:
        """This context, its parent, and so on up to the ``acting_as`` context."""
        f: RunContext | None = self
        while f is not None:
            yield f
            f = f.parent

    def nearest_token(self) -> str | None:
        """The token of this context, or of the nearest ancestor that has one."""
        for f in self.ancestors():
            if f.token is not None:
                return f.token
        return None

    def expiring(self, margin: float = 30.0) -> bool:
        return self.expires_at is not None and time.monotonic() > self.expires_at - margin


Frame = RunContext
"""The former name of :class:`RunContext`, kept so that code written against it keeps working."""


def current() -> RunContext | None:
    """The run context bound in this thread or task, or ``None``."""
    return _current.get()


def bind(context: RunContext | None) -> contextvars.Token:
    return _current.set(context)


def unbind(token: contextvars.Token) -> None:
    _current.reset(token)


def root_context(token: str, agent: str, tier: str, trace_id: str | None) -> RunContext:
    """The run context ``acting_as`` / ``set_context`` bind: a new run, with its trace id.

    The trace id is ``trace_id`` when given; else the one a delegation token carries (a worker continues the run
    it was delegated from); else the active OpenTelemetry span's; else a new random one.
    """
    validate_agent(agent, strict=False)
    validate_tier(tier)
    if trace_id is not None:
        trace_id = checked_trace_id(trace_id)
    if not isinstance(token, str) or token.strip() == "":
        raise ValueError("a token is required: the user's access token (or a delegation token)")
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    chain: tuple[str, ...] = (agent,)
    signed = signed_delegation(token)
    if signed is not None:  # an onbehalf delegation token: its chain and tier are signed, the server uses those
        chain, tier = signed.chain, signed.tier
        agent = chain[-1]
        trace_id = trace_id or signed.trace_id
    run = RunState()
    context = RunContext(token=token, agent=agent, tier=tier, chain=chain, run=run, trace_id=trace_id or new_trace_id())
    run.root = context
    return context


def refused_context(parent: RunContext, agent: str, tier: str | None, refusal: "Denied") -> RunContext:
    """The run context of ``agent`` after a hand-off or delegation to it from ``parent`` was refused.

    It has no token; calls made under it are sent to the control plane as refused attempts and refused. A
    context extended from a refused one is refused with the same reason. Its tier is the one the delegation
    would have had (``tier``, else ``subagent`` for a first hop, else the parent's).
    """
    return RunContext(
        token=None,
        agent=agent,
        tier=tier or (parent.tier if parent.is_delegation else "subagent"),
        chain=(*parent.chain, agent),
        run=parent.run,
        parent=parent,
        trace_id=parent.trace_id,
        denied=refusal,
    )


class SignedDelegation(NamedTuple):
    chain: tuple[str, ...]
    tier: str
    trace_id: str | None


def signed_delegation(token: str) -> SignedDelegation | None:
    """The chain, tier and trace id an onbehalf delegation token carries, read without verifying.

    Only for local bookkeeping (which chain to expect, whether the first hop names the root agent, which run a
    worker continues); the control plane verifies the signature and decides with what it verified.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    if not isinstance(claims, dict):
        return None
    act = claims.get("act")
    tier = claims.get("tier")
    chain: list[str] = []
    while isinstance(act, dict) and isinstance(act.get("sub"), str) and len(chain) < 64:
        chain.append(act["sub"])
        act = act.get("act")
    if not chain or tier not in TIERS:
        return None
    trace_id = claims.get("trace_id")
    try:
        trace_id = checked_trace_id(trace_id) if trace_id is not None else None
    except ValueError:
        trace_id = None
    return SignedDelegation(tuple(reversed(chain)), tier, trace_id)


def validate_tier(tier: str) -> None:
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}; got {tier!r}")


def validate_agent(agent: str, *, strict: bool) -> None:
    """Agent names are 1..200 characters; delegation targets also have no spaces or control characters."""
    if not isinstance(agent, str) or not 1 <= len(agent) <= 200:
        raise ValueError(f"an agent name is 1 to 200 characters; got {agent!r}")
    if strict and any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in agent):
        raise ValueError(f"an agent name to delegate to has no spaces or control characters; got {agent!r}")
