"""The client's part that talks to the control plane: one request, and what counts as an outage.

``_http`` speaks JSON over a pool of kept-alive connections (``http.client``). This adds the control plane's
address and timeout, and the rule every other part of :class:`~onbehalf.Client` relies on: no answer, or a 5xx
answer, is an outage (:class:`_Outage`, which the fail mode decides on); any other answer is an answer, and means
the control plane is back (:meth:`_Transport._contacted`, where the spool replay hooks in).

Internal: the public API is :class:`onbehalf.Client`.
"""

from __future__ import annotations

from typing import Any

from . import _http


class _Outage(Exception):
    """The control plane did not answer, or answered 5xx."""

    def __init__(self, reason: str, body: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.call_id = body.get("call_id") if isinstance(body, dict) and isinstance(body.get("call_id"), str) else None


class _Transport:
    """Part of :class:`~onbehalf.Client`: requests to ``base_url``, each within ``timeout`` seconds."""

    base_url: str
    timeout: float
    _pool: _http.Pool

    def _send(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        authorization: str | None = None,
        json_body: Any = None,
        timeout: float | None = None,
        contact: bool = True,
    ) -> _http.Response:
        """One request; raises :class:`_Outage` when there is no answer or a 5xx one."""
        try:
            res = _http.request(
                self._pool,
                method,
                path,
                token=token,
                authorization=authorization,
                json_body=json_body,
                timeout=timeout or self.timeout,
            )
        except _http.Unreachable as e:
            raise _Outage(str(e)) from None
        if res.status >= 500:
            raise _Outage(f"HTTP {res.status}: {res.error_message}", res.body)
        if contact:
            self._contacted()
        return res

    def _contacted(self) -> None:
        """The control plane answered. Nothing here; the fail modes' part replays the spool (``fail_modes.py``)."""
