"""The control-plane client: :class:`Client`, made of one part per concern.

Each part is a module of its own, readable on its own:

- ``bindings.py``: ``acting_as`` and ``delegate`` (and the default client: ``configure``, ``set_context``, ...);
- ``decisions.py``: ``check`` / ``acheck``, ``report``, ``verify``, and what they return (``Decision``, ``Principal``);
- ``approvals.py``: ``wait_for_approval``, and asking again with an approval;
- ``delegations.py``: the token exchange that adds a hop to a run;
- ``fail_modes.py``: deciding without the control plane, the spool, ``flush`` and background replay;
- ``reports.py``: results reported after the call returned (one round trip), spooled when they cannot be sent;
- ``transport.py``: requests to the control plane (on pooled connections, ``_http.py``), and what counts as an
  outage.

This module composes them and checks the settings.

Example::

    from onbehalf import Client

    client = Client("http://127.0.0.1:8787")
    with client.acting_as(user_token, agent="support-bot", tier="interactive"):
        decision = client.check("get_customer", {"id": "c-1"})
        if decision.decision == "allow":
            output = client.report(decision, output=db.customers.get("c-1"))   # possibly redacted
"""

from __future__ import annotations

import logging
import os
import ssl
import urllib.parse

from . import _http
from .approvals import _Approvals
from .bindings import Binding, _Bindings, clear_context, configure, default_client, set_context, verify
from .decisions import FAIL_MODES, Decision, Principal, _Decisions
from .delegations import TOKEN_EXCHANGE, _Delegations  # noqa: F401 - TOKEN_EXCHANGE: still importable from here
from .errors import ConfigurationError, OnbehalfError
from .fail_modes import _FailModes
from .reports import BATCH_WAIT, _Reports
from .spool import DEFAULT_SPOOL
from .transport import _Transport

log = logging.getLogger("onbehalf")


class Client(_Bindings, _Decisions, _Approvals, _Delegations, _FailModes, _Reports, _Transport):
    """A client of one onbehalf control plane.

    Args:
        base_url: where ``onbehalf serve`` listens, e.g. ``http://127.0.0.1:8787``.
        fail_mode: ``None`` (default) follows the tenant's declared fail mode, which comes back with every
            decision and is cached per token and tenant (``fail_closed`` until known). ``"fail_closed"`` or
            ``"fail_open"`` overrides it locally; the override is logged whenever it is used.
        spool_path: the local audit spool of fail-open calls (JSON lines, 0600). ``None``: no spool, so a
            fail-open tenant's calls are denied during an outage (their audit could not be kept).
        timeout: seconds per HTTP request (approval long-polls add their wait).
        approval_timeout: how long a governed call waits for a human when policy says ``ask``; 0 (default)
            raises :class:`~onbehalf.ApprovalRequired` at once.
        stale_after: seconds after which a ``started`` spool record of a call that never finished is replayed.
        replay_interval: at most one automatic spool replay per this many seconds.
        auto_replay: replay the spool in a background thread whenever the control plane answers (default);
            ``False``: only on :meth:`flush`.
        client_id: this agent runtime's OAuth client id, sent with every delegation exchange (``POST
            /v1/token``); with ``client_secret``, it authenticates as that registered client
            (``client_secret_basic``). A tenant with ``require_client_auth`` takes delegations only so.
        client_secret: the registered client's secret.
        ssl_context: the TLS settings for an ``https`` control plane (an :class:`ssl.SSLContext` that verifies the
            certificate and the host name; one that does not is refused). Default: the system's trusted CAs.
        ca_file: instead of ``ssl_context``: trust the CA certificates of this PEM file (a private CA).
        client_cert: instead of ``ssl_context``: present this certificate (PEM; with its key unless
            ``client_key`` names it) to a control plane that asks for one (mutual TLS).
        client_key: the private key of ``client_cert``.
        pool_size: how many kept-alive connections to keep open between calls (default 4); more concurrent calls
            open more, closed after use. 0: a new connection per request.
        background_reports: report the result of a call whose output policy does not transform (``audit``) in a
            background thread, so a governed call takes one round trip (default); the report is spooled when it
            cannot be sent. ``False``: every report in the caller's thread, as a redacted output's always is.
        report_batch_wait: how long the reporting thread waits, after the first queued report, for more to send
            with it in one request (``POST /v1/calls/results``, up to 256); default 0.02 seconds. A flush (``flush``,
            ``close``, the end of the process) sends at once. 0: send what is queued the moment the thread is free.

    Example::

        client = Client("http://127.0.0.1:8787", spool_path="~/.onbehalf/spool.jsonl")
        with client.acting_as(token, agent="support-bot", tier="interactive"):
            with client.delegate("specialist", scopes=["email.read"], tier="subagent"):
                read_email(mailbox="a@example.com")
        client.flush()
    """

    def __init__(
        self,
        base_url: str,
        fail_mode: str | None = None,
        spool_path: str | os.PathLike[str] | None = DEFAULT_SPOOL,
        timeout: float = 2.0,
        *,
        approval_timeout: float = 0.0,
        stale_after: float = 900.0,
        replay_interval: float = 5.0,
        auto_replay: bool = True,
        client_id: str | None = None,
        client_secret: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        pool_size: int = _http.DEFAULT_POOL_SIZE,
        background_reports: bool = True,
        report_batch_wait: float = BATCH_WAIT,
    ) -> None:
        parts = urllib.parse.urlsplit(str(base_url))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"base_url must be an http(s) URL like http://127.0.0.1:8787; got {base_url!r}")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            log.warning("onbehalf: %s is plain http: user tokens cross the network unencrypted", base_url)
        if fail_mode not in (None, *FAIL_MODES):
            raise ConfigurationError(f"fail_mode must be None, 'fail_closed' or 'fail_open'; got {fail_mode!r}")
        if timeout <= 0:
            raise ConfigurationError("timeout must be positive")
        if client_secret is not None and client_id is None:
            raise ConfigurationError("client_secret needs client_id: the registered client it authenticates")
        self.client_id = client_id
        self.client_secret = client_secret
        if ssl_context is not None and (ca_file is not None or client_cert is not None):
            raise ConfigurationError("give either ssl_context or ca_file/client_cert, not both")
        if client_key is not None and client_cert is None:
            raise ConfigurationError("client_key needs client_cert: the certificate it is the key of")
        if pool_size < 0:
            raise ConfigurationError("pool_size must be 0 or more")
        if not 0 <= report_batch_wait <= 60:
            raise ConfigurationError("report_batch_wait must be 0 to 60 seconds")
        self.base_url = str(base_url).rstrip("/")
        self.timeout = float(timeout)
        self.approval_timeout = float(approval_timeout)
        if parts.scheme == "https" and ssl_context is None:
            try:
                ssl_context = _http.tls_context(ca_file, client_cert, client_key)
            except (OSError, ssl.SSLError) as e:
                raise ConfigurationError(f"cannot load the TLS settings (ca_file, client_cert, client_key): {e}") from e
        elif parts.scheme == "http" and (ssl_context is not None or ca_file is not None or client_cert is not None):
            raise ConfigurationError(f"TLS settings need an https base_url; got {base_url!r}")
        try:
            self._pool = _http.Pool(self.base_url, ssl_context=ssl_context, size=pool_size)
        except ValueError as e:
            raise ConfigurationError(str(e)) from None
        self._init_fail_modes(fail_mode, spool_path, stale_after, replay_interval, auto_replay)
        self._init_reports(background_reports, report_batch_wait)

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, fail_mode={self.fail_mode!r})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "Binding",
    "Client",
    "Decision",
    "OnbehalfError",
    "Principal",
    "clear_context",
    "configure",
    "default_client",
    "set_context",
    "verify",
]
