"""STAND-IN of autogen_agentchat.base.Handoff (0.7.x fields and defaults; a pydantic model there)."""

from __future__ import annotations

from typing import Any

from autogen_core.tools import FunctionTool


class Handoff:
    def __init__(self, *, target: str, description: str | None = None, name: str | None = None, message: str | None = None) -> None:
        if name is not None and not name.isidentifier():
            raise ValueError(f"Handoff name must be a valid identifier: {name}")
        self.target = target
        self.description = description if description is not None else f"Handoff to {target}."
        self.name = name if name is not None else f"transfer_to_{target}".lower()
        self.message = message if message is not None else f"Transferred to {target}, adopting the role of {target} immediately."

    @property
    def handoff_tool(self) -> Any:
        def _handoff_tool() -> str:
            return self.message

        return FunctionTool(_handoff_tool, name=self.name, description=self.description)
