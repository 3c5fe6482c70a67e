"""The client's part that delegates: a hop added to the run, as a token the control plane signs.

A delegation is exchanged at ``POST /v1/token`` (RFC 8693) with the parent's token as ``subject_token``; the
control plane signs the chain (every hop's agent and tier) and narrows the scopes. The exchange happens when the
``delegate`` block is entered, again shortly before the token expires, and, if the control plane could not be
reached, on the next call (which follows the fail mode meanwhile).

Uses, from the other parts of :class:`~onbehalf.Client`: ``_send`` (``transport.py``).
"""

from __future__ import annotations

import base64
import logging
import time
import urllib.parse
from typing import Any, Mapping, Sequence

from .context import RunContext, refused_context, signed_delegation
from .errors import Denied, Unauthenticated
from .transport import _Outage

log = logging.getLogger("onbehalf")

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class _Delegations:
    """Part of :class:`~onbehalf.Client`: the run context of a delegation, and the token of any run context.

    With ``client_id`` (and ``client_secret``) the exchanges authenticate the agent runtime as a registered OAuth
    client (``client_secret_basic``; a ``client_id`` alone names a public client)."""

    client_id: str | None
    client_secret: str | None

    def _delegate_context(
        self,
        parent: RunContext,
        agent: str,
        scopes: tuple[str, ...] | None,
        tier: str | None,
        capabilities: "dict[str, Any] | None" = None,
        restates: bool = False,
    ) -> RunContext:
        """The run context of ``agent`` acting under ``parent``, its token exchanged now; raises
        :class:`~onbehalf.Denied` when the control plane refuses the delegation, and leaves the exchange to the
        next call when it cannot be reached."""
        if tier is None:
            tier = parent.tier if parent.is_delegation else "subagent"
        if parent.denied is not None:  # an agent whose hand-off was refused delegates nothing it could use
            return refused_context(parent, agent, tier, parent.denied)
        child = RunContext(
            token=None,
            agent=agent,
            tier=tier,
            chain=parent.chain if restates else (*parent.chain, agent),
            run=parent.run,
            parent=parent,
            requested_scopes=scopes,
            trace_id=parent.trace_id,
            capabilities=capabilities,
            restates=restates,
        )
        try:
            self._token_for(child)
        except _Outage as o:
            log.warning(
                "onbehalf: delegation to %s not exchanged yet: the control plane is unreachable (%s); "
                "retried on the next call, which follows the fail mode meanwhile",
                agent,
                o.reason,
            )
        return child

    def _token_for(self, context: RunContext) -> str:
        """The context's token, exchanging (or renewing) a delegation first. Raises _Outage."""
        with context.lock:
            if context.parent is None:
                assert context.token is not None
                return context.token
            if context.token is not None and not context.expiring():
                return context.token
            parent = context.parent
            subject = self._token_for(parent)
            body: dict[str, Any] = {
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": subject,
                "subject_token_type": ACCESS_TOKEN_TYPE,
                "actor": context.agent,
                "tier": context.tier,
            }
            authorization = None
            if self.client_id is not None and self.client_secret is not None:
                authorization = client_basic(self.client_id, self.client_secret)
            elif self.client_id is not None:
                body["client_id"] = self.client_id
            if context.trace_id is not None:
                body["trace_id"] = context.trace_id
            # The control plane cannot know which agent holds a human's own token: name it, so the signed chain
            # of ``acting_as(token, agent="planner")`` then ``delegate("researcher")`` is [planner, researcher].
            # A token that carries a signed chain already needs (and takes) no such name.
            # ``acting_as(..., capabilities=...)`` restates the holder of the human's token: it is the actor itself.
            if parent.parent is None and signed_delegation(subject) is None and not context.restates:
                body["subject_actor"] = parent.agent
                body["subject_tier"] = parent.tier  # signed too: its calls' successors are decided under it
            if context.requested_scopes is not None:
                body["scope"] = " ".join(context.requested_scopes)
            if context.capabilities is not None:
                # RFC 9396: signed into the token on top of the subject's own, never in their place
                body["authorization_details"] = [context.capabilities]
            res = self._send("POST", "/v1/token", authorization=authorization, json_body=body)
            b = res.body
            if res.status == 200 and isinstance(b, dict) and isinstance(b.get("access_token"), str):
                context.token = b["access_token"]
                context.scopes = tuple(str(b.get("scope") or "").split())
                context.expires_at = time.monotonic() + float(b.get("expires_in") or 600)
                if context.requested_scopes is not None:
                    dropped = [s for s in context.requested_scopes if s not in context.scopes]
                    if dropped:
                        log.info(
                            "onbehalf: delegation to %s granted without %s (the subject does not hold them)",
                            context.agent,
                            " ".join(dropped),
                        )
                return context.token
            if res.error_code == "invalid_client":  # this runtime failed to authenticate, not the human
                raise Denied(
                    "error",
                    f"the control plane refused this client for the delegation to {context.agent}: {res.error_message}",
                    chain=context.chain,
                )
            if res.status == 401 or (res.error_code == "invalid_request" and _subject_refused(res.body)):
                raise Unauthenticated(
                    f"the delegation to {context.agent} was refused: {res.error_message}", chain=context.chain
                )
            raise Denied(
                "error",
                f"the control plane refused the delegation to {context.agent} (HTTP {res.status}): {res.error_message}",
                chain=context.chain,
            )


CAPABILITIES_TYPE = "urn:onbehalf:capabilities"


def _capabilities(capabilities: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A task's capabilities as an ``authorization_details`` entry: ``{"tools": [...], "data": {...}}``, each tool a
    name or ``{"tool": name, "when": CEL}``. The control plane validates the rest (a bad one refuses the exchange)."""
    if capabilities is None:
        return None
    if not isinstance(capabilities, Mapping) or not isinstance(capabilities.get("tools"), (list, tuple)):
        raise ValueError(
            'capabilities are {"tools": [name or {"tool": name, "when": CEL}, ...], "data": {...}}; '
            f"got {capabilities!r}"
        )
    unknown = set(capabilities) - {"tools", "data", "type"}
    if unknown or capabilities.get("type", CAPABILITIES_TYPE) != CAPABILITIES_TYPE:
        raise ValueError(f"capabilities take tools and data only; got {sorted(capabilities)!r}")
    entry: dict[str, Any] = {"type": CAPABILITIES_TYPE, "tools": list(capabilities["tools"])}
    if capabilities.get("data") is not None:
        entry["data"] = dict(capabilities["data"])
    return entry


def _scopes(scopes: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """The scopes a delegation asks for: ``None`` (all of the parent's), a space-separated string, or a list."""
    if scopes is None:
        return None
    if isinstance(scopes, str):
        return tuple(scopes.split())
    out = tuple(scopes)
    if not all(isinstance(s, str) and s and not any(c.isspace() for c in s) for s in out):
        raise ValueError(f"scopes are non-empty strings without spaces; got {scopes!r}")
    return out


def client_basic(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1 ``client_secret_basic``: both parts form-urlencoded, then base64."""
    pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def _subject_refused(body: Any) -> bool:
    """Whether ``/v1/token`` refused the subject token itself (expired, not verifiable): the human must sign in."""
    description = body.get("error_description") if isinstance(body, dict) else None
    return isinstance(description, str) and description.startswith("the subject_token is not acceptable")
