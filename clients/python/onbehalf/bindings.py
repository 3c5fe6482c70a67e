"""Binding a run: who the code in a block (or a task, or a thread) acts for, and the default client.

``client.acting_as`` starts a run for a human's token, ``client.delegate`` adds a hop to it; both return a
:class:`Binding`, a context manager for ``with`` and ``async with``. ``onbehalf.set_context`` binds without a block,
on the default client's terms; ``onbehalf.configure`` / ``default_client`` say which client that is, and
``onbehalf.verify`` verifies a request's ``Authorization`` header with it. What is bound lives in ``context.py``.

Uses, from the other parts of :class:`~onbehalf.Client`: ``_delegate_context`` (``delegations.py``).

Example::

    user = onbehalf.verify(request.headers["authorization"])
    onbehalf.set_context(user.token, agent="support-bot", tier="interactive")
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ._trace import checked_trace_id
from .context import RunContext, bind, current, root_context, unbind, validate_agent, validate_tier
from .decisions import _NO_IDENTITY, Principal
from .delegations import _capabilities, _scopes
from .errors import ConfigurationError, Denied
from .spool import DEFAULT_SPOOL

if TYPE_CHECKING:
    from .client import Client


class Binding:
    """What ``acting_as`` and ``delegate`` return: a context manager for ``with`` and ``async with``.

    Entering binds a :class:`~onbehalf.context.RunContext` for the block (in this thread, or this asyncio task and
    the tasks it creates) and returns it; leaving restores what was bound before. ``async with`` performs the
    delegation exchange in a worker thread, so it does not block the event loop.
    """

    def __init__(self, make: Callable[[], RunContext]) -> None:
        self._make = make
        self._resets: list[contextvars.Token] = []

    def __enter__(self) -> RunContext:
        context = self._make()
        self._resets.append(bind(context))
        return context

    def __exit__(self, *exc: object) -> None:
        unbind(self._resets.pop())

    async def __aenter__(self) -> RunContext:
        context = await asyncio.to_thread(self._make)
        self._resets.append(bind(context))
        return context

    async def __aexit__(self, *exc: object) -> None:
        unbind(self._resets.pop())


class _Bindings:
    """Part of :class:`~onbehalf.Client`: ``acting_as`` and ``delegate``."""

    def acting_as(
        self,
        token: str,
        agent: str,
        tier: str = "interactive",
        *,
        trace_id: str | None = None,
        capabilities: Mapping[str, Any] | None = None,
    ) -> Binding:
        """Bind a human's token for a block; calls in it act for that human through ``agent``.

        The block is one run with one trace id (``trace_id``, else the one a delegation token carries, else the
        active OpenTelemetry span's, else a new one): every check, delegation and spooled record of the run
        carries it, so ``GET /v1/audit?trace=<trace id>`` finds the whole run.

        ``capabilities`` limits the run to its task (docs/capabilities.md): ``{"tools": [...], "data": {...}}``, each
        tool a name or ``{"tool": name, "when": CEL over args and task}``. The human's token is exchanged
        (``POST /v1/token``) for one that carries them, signed; every call of the run, and of every delegation in
        it, must pass them on top of the tenant's policy. While they cannot be evaluated (control plane
        unreachable) the run's calls are denied, whatever the tenant's fail mode.

        Example::

            with client.acting_as(token, agent="support-bot", tier="interactive"):
                await team.run(task="...")
            async with client.acting_as(token, agent="support-bot"):
                ...
            with client.acting_as(token, agent="bank-bot", capabilities={
                "tools": ["get_balance", {"tool": "send_money", "when": "args.recipient == task.payee"}],
                "data": {"payee": "GB29NWBK60161331926819"},
            }):
                ...
        """
        validate_agent(agent, strict=False)
        validate_tier(tier)
        if trace_id is not None:
            checked_trace_id(trace_id)
        wanted = _capabilities(capabilities)
        if wanted is None:
            return Binding(lambda: root_context(token, agent, tier, trace_id))

        def make() -> RunContext:
            root = root_context(token, agent, tier, trace_id)
            if root.chain != (agent,):
                raise ValueError(
                    "acting_as(capabilities=...) takes a human's own token; to limit a delegation token's run, "
                    "use client.delegate(..., capabilities=...)"
                )
            limited = self._delegate_context(root, agent, None, tier, wanted, restates=True)
            root.run.root = limited
            return limited

        return Binding(make)

    def delegate(
        self,
        agent: str,
        scopes: Sequence[str] | str | None = None,
        tier: str | None = None,
        *,
        capabilities: Mapping[str, Any] | None = None,
    ) -> Binding:
        """Hand the work to ``agent`` for a block: exchange the bound token for a narrower delegation token.

        The control plane (``POST /v1/token``, RFC 8693) signs a token whose chain is the current chain plus
        ``agent`` and whose scopes are ``scopes`` ∩ the current ones (``None``: all of them); it is bound for
        the block, and nested ``delegate`` blocks extend the chain further. ``tier`` is the new hop's tier:
        ``subagent`` by default for the first hop, the tier of the hop it extends for later ones. Every hop's tier
        is signed into the chain and a call is decided under each of them, the strictest winning, so a hop can
        only narrow what the run may do. The delegation keeps the run's trace id. When the control plane cannot
        be reached the exchange is retried on each call and the calls follow the fail mode meanwhile. Inside an
        agent whose hand-off was refused, the delegation is refused too: calls in the block are refused (and
        audited as refused attempts).

        ``capabilities`` (as for ``acting_as``) limits the delegate further: they are added to the run's, never put in
        their place, so a delegate can only narrow what its task may do.

        Raises :class:`~onbehalf.Denied` (``no_identity``) when nothing is bound, :class:`~onbehalf.Unauthenticated`
        when the bound token is refused.

        Example::

            with client.delegate("billing-agent", scopes=["refunds:write"], tier="subagent"):
                issue_refund(order="o-1", amount=20)
        """
        validate_agent(agent, strict=True)
        if tier is not None:
            validate_tier(tier)
        wanted = _scopes(scopes)
        limits = _capabilities(capabilities)

        def make() -> RunContext:
            parent = current()
            if parent is None:
                raise Denied("no_identity", _NO_IDENTITY)
            return self._delegate_context(parent, agent, wanted, tier, limits)

        return Binding(make)


# -- the default client (the seed's three lines) --------------------------------------------------------------

_default: Client | None = None
_default_lock = threading.Lock()


def configure(client: Client | None) -> None:
    """Set (or clear) the client used by ``onbehalf.verify``, ``set_context`` and bare ``@governed``."""
    global _default
    with _default_lock:
        _default = client


def default_client() -> Client:
    """The default client, made on first use from the environment.

    ``ONBEHALF_URL`` (required), ``ONBEHALF_FAIL_MODE``, ``ONBEHALF_SPOOL`` (a path, or ``none``),
    ``ONBEHALF_TIMEOUT``, ``ONBEHALF_APPROVAL_TIMEOUT``, and for an https control plane ``ONBEHALF_CA_FILE``,
    ``ONBEHALF_CLIENT_CERT``, ``ONBEHALF_CLIENT_KEY``.
    """
    from .client import Client  # here, not at the top: client.py is made of this module's _Bindings

    global _default
    with _default_lock:
        if _default is None:
            url = os.environ.get("ONBEHALF_URL", "").strip()
            if not url:
                raise ConfigurationError(
                    "no control plane configured: set ONBEHALF_URL (e.g. http://127.0.0.1:8787), call "
                    "onbehalf.configure(Client(...)), or pass a client to @governed(client)"
                )
            spool = os.environ.get("ONBEHALF_SPOOL", DEFAULT_SPOOL)
            _default = Client(
                url,
                fail_mode=os.environ.get("ONBEHALF_FAIL_MODE") or None,
                spool_path=None if spool.lower() in ("", "none") else spool,
                timeout=float(os.environ.get("ONBEHALF_TIMEOUT") or 2.0),
                approval_timeout=float(os.environ.get("ONBEHALF_APPROVAL_TIMEOUT") or 0.0),
                ca_file=os.environ.get("ONBEHALF_CA_FILE") or None,
                client_cert=os.environ.get("ONBEHALF_CLIENT_CERT") or None,
                client_key=os.environ.get("ONBEHALF_CLIENT_KEY") or None,
            )
        return _default


def verify(authorization: str | None) -> Principal:
    """Verify a request's ``Authorization`` header on the default client (``POST /v1/verify``).

    Example::

        user = onbehalf.verify(request.headers["authorization"])
        onbehalf.set_context(user.token, agent="support-bot", tier="interactive")
    """
    return default_client().verify(authorization)


def set_context(token: str, agent: str, tier: str = "interactive", *, trace_id: str | None = None) -> RunContext:
    """Bind ``token`` for the rest of the current task or thread (no block needed).

    It stays bound until the task or thread ends, or :func:`clear_context`. Prefer ``client.acting_as`` where a
    block fits: it restores what was bound before. Like ``acting_as``, it starts a run with its own trace id
    (``trace_id``, else a delegation token's, the active OpenTelemetry span's, or a new one).
    """
    validate_agent(agent, strict=False)
    validate_tier(tier)
    context = root_context(token, agent, tier, trace_id)
    bind(context)
    return context


def clear_context() -> None:
    """Unbind whatever is bound in the current task or thread."""
    bind(None)
