"""Trace ids: one per run, so that every audit record of a run can be found together.

A run bound without a trace id gets one in the W3C trace-context format (32 lowercase hex digits, not all zero):
the trace id of the active OpenTelemetry span when the OpenTelemetry API is installed and a span is active, a
random one otherwise. OpenTelemetry is an optional import; nothing here needs it.

Internal: callers pass ``trace_id=`` to ``acting_as`` / ``set_context``, or read ``onbehalf.current().trace_id``.

Example::

    new_trace_id()            # '4bf92f3577b34da6a3ce929d0e0e4736'
"""

from __future__ import annotations

import os
from typing import Any

_MAX = 200  # the control plane's limit for a trace id

_otel: Any = None  # the opentelemetry.trace module, False once it is known not to import


def new_trace_id() -> str:
    """The active OpenTelemetry span's trace id, or a fresh random one (W3C format)."""
    return otel_trace_id() or random_trace_id()


def random_trace_id() -> str:
    """32 lowercase hex digits from ``os.urandom``, never all zero (an invalid W3C trace id)."""
    while True:
        value = os.urandom(16).hex()
        if value != "0" * 32:
            return value


def otel_trace_id() -> str | None:
    """The trace id of the active OpenTelemetry span, if the API is importable and a valid span is active."""
    global _otel
    if _otel is False:
        return None
    if _otel is None:
        try:
            from opentelemetry import trace
        except Exception:  # noqa: BLE001 - not installed, or broken: it is optional
            _otel = False
            return None
        _otel = trace
    try:
        context = _otel.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return format(context.trace_id, "032x")
    except Exception:  # noqa: BLE001 - a tracing problem must never stop a governed call
        return None


def checked_trace_id(trace_id: Any) -> str:
    """A caller's own trace id, as the control plane takes it: 1..200 characters, no control characters."""
    if (
        not isinstance(trace_id, str)
        or not 1 <= len(trace_id) <= _MAX
        or any(ord(c) < 32 or 127 <= ord(c) < 160 or 0xD800 <= ord(c) <= 0xDFFF for c in trace_id)
    ):
        raise ValueError(
            f"a trace id is 1 to {_MAX} characters without control characters or lone surrogates; got {trace_id!r}"
        )
    return trace_id
