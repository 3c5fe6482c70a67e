"""JSON over HTTP with urllib: no redirects (a bearer token never follows a redirect to another host), a size cap
on answers, and one exception, :class:`Unreachable`, for every way the control plane can fail to answer.

Internal: the public API is :class:`onbehalf.Client`.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Mapping

USER_AGENT = "onbehalf-python/0.1"
MAX_ANSWER_BYTES = 32 * 1024 * 1024


class Unreachable(Exception):
    """No HTTP answer: connection refused or reset, DNS failure, timeout, a truncated answer."""


@dataclass
class Response:
    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def error_message(self) -> str:
        """The message of an ``{"error": {"code", "message"}}`` body, of an OAuth error (``/v1/token``:
        ``{"error", "error_description"}``, as ``"<error>: <description>"``), or a short description."""
        if isinstance(self.body, dict):
            err = self.body.get("error")
            if isinstance(err, dict):
                return str(err.get("message") or err.get("code") or f"HTTP {self.status}")
            if isinstance(err, str):
                description = self.body.get("error_description")
                return f"{err}: {description}" if description else err
        return f"HTTP {self.status}"

    @property
    def error_code(self) -> str | None:
        """The API's error code (``ERR_…``), or an OAuth error (``invalid_client``…) at ``/v1/token``."""
        if isinstance(self.body, dict):
            err = self.body.get("error")
            if isinstance(err, dict):
                code = err.get("code")
                return str(code) if code is not None else None
            if isinstance(err, str):
                return err
        return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None  # urllib then raises HTTPError with the 3xx: handled as a refusal, never followed


_OPENER = urllib.request.build_opener(_NoRedirect())


def request(
    method: str,
    url: str,
    *,
    token: str | None = None,
    authorization: str | None = None,
    json_body: Any = None,
    timeout: float,
) -> Response:
    """Send one request; return the answer (any status), or raise :class:`Unreachable`. ``authorization``: a
    whole ``Authorization`` header (client authentication), instead of a bearer ``token``."""
    headers = {"accept": "application/json", "user-agent": USER_AGENT}
    data: bytes | None = None
    if token is not None:
        headers["authorization"] = token if token[:7].lower() == "bearer " else f"Bearer {token}"
    elif authorization is not None:
        headers["authorization"] = authorization
    if json_body is not None:
        data = json.dumps(json_body, allow_nan=False, separators=(",", ":")).encode("utf-8")
        headers["content-type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as res:
            return Response(res.status, _parse(_read(res)), dict(res.headers.items()))
    except urllib.error.HTTPError as e:
        try:
            body = _parse(_read(e))
        except (OSError, http.client.HTTPException):
            body = None
        finally:
            e.close()
        return Response(e.code, body, dict(e.headers.items()) if e.headers else {})
    except urllib.error.URLError as e:
        raise Unreachable(_describe(e.reason)) from None
    except (socket.timeout, TimeoutError) as e:
        raise Unreachable(f"timed out after {timeout:g} s") from e
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise Unreachable(_describe(e)) from None


def query(params: Mapping[str, Any]) -> str:
    return urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})


def _read(res: Any) -> bytes:
    raw = res.read(MAX_ANSWER_BYTES + 1)
    if len(raw) > MAX_ANSWER_BYTES:
        raise ValueError(f"answer over {MAX_ANSWER_BYTES} bytes")
    return raw


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:500]


def _describe(reason: Any) -> str:
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return str(reason)
