"""``@governed``: check a function's call with the control plane, run it only if allowed, report its result.

Example::

    @governed                                  # the default client (ONBEHALF_URL)
    def get_customer(customer_id: str) -> dict: ...

    @governed(client, name="issue_refund")     # a given client and tool name
    async def refund(order: str, amount: int) -> dict: ...

A call binds its arguments to the signature (defaults applied) into the ``args`` the policy sees, asks
``POST /v1/check`` for the bound identity, and then:

- ``allow``: runs the function, reports the result (``POST /v1/calls/{id}/result``) and returns the output
  as policy lets it out: unchanged, redacted, or not at all (``Denied``, reason ``output blocked``). A string
  holding JSON comes back redacted as a string; a string holding a Python repr (``str(dict)``) is parsed with
  ``ast.literal_eval`` so that its fields can be redacted, and comes back as a repr; text the control plane
  cannot check for the redacted fields comes back as a ``[withheld by onbehalf: ...]`` notice;
- ``deny``: raises :class:`~onbehalf.Denied` with the ``reason_code``; the function does not run;
- ``ask``: waits up to the client's ``approval_timeout`` for a human (long-polling the approval), runs the
  function once approved and reports under the original call id; raises ``ApprovalRequired`` (no decision in
  time) or ``Denied`` (``approval_denied`` / ``approval_expired``).

Nothing bound raises ``Denied(reason_code="no_identity")``: a governed function never runs ungoverned (and the
attempt is still sent to the control plane, without a token, which audits it as an anonymous attempt).
"""

from __future__ import annotations

import ast
import asyncio
import functools
import json
import inspect
import logging
import threading
import time
from typing import Any, Callable, Mapping, TypeVar, overload

from .bindings import default_client
from .client import Client
from .decisions import Decision
from .context import current
from .errors import Denied

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("onbehalf")

_SKIPPED = ("cancellation_token",)  # AutoGen passes it to tools; it is plumbing, not an argument to decide on


@overload
def governed(fn: F) -> F: ...
@overload
def governed(fn: Client | None = None, *, name: str | None = None) -> Callable[[F], F]: ...
@overload
def governed(*, client: Client | None = None, name: str | None = None) -> Callable[[F], F]: ...


def governed(fn: Any = None, client: Client | None = None, *, name: str | None = None) -> Any:
    """Decorate a sync or async function so each call is governed. See the module docstring."""
    if isinstance(fn, Client):
        client, fn = fn, None
    if fn is not None:
        if not callable(fn):
            raise TypeError("@governed decorates a function: @governed, @governed(client) or @governed(name=...)")
        return _wrap(fn, client, name)
    return lambda f: _wrap(f, client, name)


def _wrap(fn: F, client: Client | None, name: str | None) -> F:
    tool = name or getattr(fn, "__name__", None)
    if not tool:
        raise TypeError("cannot tell the tool's name: use @governed(name=...)")
    signature = inspect.signature(fn)

    def resolve() -> Client:
        return client if client is not None else default_client()

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def agoverned(*args: Any, **kwargs: Any) -> Any:
            bound = _arguments(signature, args, kwargs)
            c = resolve()
            context = current()
            decision = await asyncio.to_thread(_decide, c, context, tool, bound)
            started = time.monotonic()
            try:
                output = await fn(*args, **kwargs)
            except asyncio.CancelledError:
                _report_in_background(c, decision, "cancelled", started)
                raise
            except BaseException as e:
                await asyncio.to_thread(_report_error, c, decision, e, started)
                raise
            return await asyncio.to_thread(_report_output, c, decision, output, _micros(started))

        agoverned.__onbehalf_tool__ = tool  # type: ignore[attr-defined]
        return agoverned  # type: ignore[return-value]

    @functools.wraps(fn)
    def sgoverned(*args: Any, **kwargs: Any) -> Any:
        bound = _arguments(signature, args, kwargs)
        c = resolve()
        decision = _decide(c, current(), tool, bound)
        started = time.monotonic()
        try:
            output = fn(*args, **kwargs)
        except BaseException as e:
            _report_error(c, decision, e, started)
            raise
        return _report_output(c, decision, output, _micros(started))

    sgoverned.__onbehalf_tool__ = tool  # type: ignore[attr-defined]
    return sgoverned  # type: ignore[return-value]


def _decide(client: Client, context: Any, tool: str, args: Mapping[str, Any]) -> Decision:
    """Decide, waiting for approval if asked; return an ``allow`` decision or raise ``Denied``."""
    decision = client._decide(context, tool, args)
    if decision.decision == "ask":
        decision = client._resolve_ask(decision, client.approval_timeout)
    if decision.decision != "allow":
        raise Denied.from_decision(decision)
    return decision


def _arguments(signature: inspect.Signature, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's arguments by name, as the policy sees them (``args.amount > 500``)."""
    bound = signature.bind(*args, **kwargs)  # a TypeError here is the caller's, before anything is checked
    bound.apply_defaults()
    params = list(signature.parameters.values())
    out: dict[str, Any] = {}
    for i, (key, value) in enumerate(bound.arguments.items()):
        p = signature.parameters[key]
        if i == 0 and key in ("self", "cls") and p is params[0]:
            continue
        if key in _SKIPPED:
            continue
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            out.update({str(k): v for k, v in value.items()})
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            out[key] = list(value)
        else:
            out[key] = value
    return out


def _report_output(client: Client, decision: Decision, output: Any, latency_us: int) -> Any:
    """Report ``output`` and return it as policy lets the model see it, in the shape the function gave it."""
    reported, shape = _reportable(output, decision)
    shown = client.report(decision, reported, latency_us=latency_us)
    return output if shown is reported else _reshaped(shown, shape)


# -- output as the control plane redacts it -------------------------------------------------------------------

_MAX_REPR = 1_048_576  # longer text is not parsed as a repr: reported as text, it is withheld when redacted


def _reportable(output: Any, decision: Decision) -> tuple[Any, str]:
    """What to report for ``output``, and the shape to give back what policy lets out: ``"repr"`` or ``"value"``.

    When the output is redacted, a string holding a Python literal that is not JSON (``str(dict)``, which is what
    AutoGen's ``FunctionTool`` hands the model) is parsed with ``ast.literal_eval`` and reported as the value, so
    the control plane can redact its fields. JSON text is reported as it is (the control plane redacts JSON held in
    strings); anything else is text, which the control plane withholds when it cannot check it.

    Example::

        _reportable("{'ssn': '078-05-1120'}", decision)   # ({'ssn': '078-05-1120'}, "repr") when redacting
    """
    if decision.post_transform == "redact" and isinstance(output, str):
        value = _literal(output)
        if value is not _NOT_LITERAL:
            return value, "repr"
    return output, "value"


def _reshaped(shown: Any, shape: str) -> Any:
    """What the control plane let out, in the shape the output had (a repr stays a repr)."""
    if shape == "repr" and not isinstance(shown, str):
        return repr(shown)
    return shown


_NOT_LITERAL = object()


def _literal(text: str) -> Any:
    stripped = text.strip()
    if stripped[:1] not in ("{", "[", "(") or len(stripped) > _MAX_REPR:
        return _NOT_LITERAL
    try:
        json.loads(stripped)
        return _NOT_LITERAL  # JSON: the control plane reads it as it is, and it stays JSON
    except ValueError:
        pass
    try:
        value = ast.literal_eval(stripped)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL
    return value if isinstance(value, (dict, list, tuple)) else _NOT_LITERAL


def _report_error(client: Client, decision: Decision, error: BaseException, started: float) -> None:
    try:
        client.report(decision, error=_describe(error), latency_us=_micros(started))
    except Exception as e:  # noqa: BLE001 - the tool's own exception is what the caller must see
        log.warning("onbehalf: could not report the failure of call %s: %s", decision.call_id, e)


def _report_in_background(client: Client, decision: Decision, what: str, started: float) -> None:
    latency = _micros(started)

    def run() -> None:
        try:
            client.report(decision, error=what, latency_us=latency)
        except Exception as e:  # noqa: BLE001
            log.warning("onbehalf: could not report the cancellation of call %s: %s", decision.call_id, e)

    threading.Thread(target=run, name="onbehalf-report", daemon=True).start()


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _micros(started: float) -> int:
    return int((time.monotonic() - started) * 1_000_000)
