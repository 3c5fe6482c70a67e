"""Turn tool arguments and outputs into JSON the control plane can decide on, redact and audit."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import uuid
from typing import Any, Mapping

_MAX_DEPTH = 64


def to_jsonable(value: Any, _depth: int = 0) -> Any:
    """A JSON-safe copy: mappings with string keys, lists, numbers, strings, booleans and ``None``.

    Dataclasses and pydantic models become objects, dates ISO strings, bytes a length note, non-finite floats
    strings; anything else its ``str()``. Nesting deeper than 64 levels is cut.

    Example::

        to_jsonable({"when": datetime.date(2026, 1, 2), "ids": {1, 2}})   # {"when": "2026-01-02", "ids": [1, 2]}
    """
    if _depth > _MAX_DEPTH:
        return "[nested too deep]"
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, _depth + 1)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_jsonable(v, _depth + 1) for v in items]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"[{len(bytes(value))} bytes]"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, _depth + 1)
    dump = getattr(value, "model_dump", None)  # pydantic v2
    if callable(dump):
        try:
            return to_jsonable(dump(mode="json"), _depth + 1)
        except Exception:  # noqa: BLE001 - fall back to str()
            pass
    return str(value)
