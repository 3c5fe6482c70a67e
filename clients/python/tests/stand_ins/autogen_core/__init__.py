"""STAND-IN of autogen-core 0.7.5 for the onbehalf tests (not AutoGen): CancellationToken only."""

from __future__ import annotations

from typing import Any


class CancellationToken:
    def __init__(self) -> None:
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def is_cancelled(self) -> bool:
        return self._cancelled

    def link_future(self, future: Any) -> Any:
        return future
