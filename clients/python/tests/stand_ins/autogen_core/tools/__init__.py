"""STAND-IN of autogen_core.tools (autogen-core 0.7.5 signatures) for the onbehalf tests; not AutoGen."""

from __future__ import annotations

import asyncio
import functools
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, TypedDict

from .. import CancellationToken


class ToolSchema(TypedDict, total=False):
    name: str
    description: str
    parameters: Dict[str, Any]
    strict: bool


@dataclass
class TextResultContent:
    content: str
    type: Literal["TextResultContent"] = "TextResultContent"


@dataclass
class ImageResultContent:
    content: Any
    type: Literal["ImageResultContent"] = "ImageResultContent"


@dataclass
class ToolResult:
    name: str
    result: List[Any]
    is_error: bool = False
    type: Literal["ToolResult"] = "ToolResult"

    def to_text(self, replace_image: Optional[str] = None) -> str:
        return "\n".join(c.content if isinstance(c, TextResultContent) else (replace_image or "[image]") for c in self.result)


class Workbench(ABC):
    component_type = "workbench"

    @abstractmethod
    async def list_tools(self) -> List[ToolSchema]: ...

    @abstractmethod
    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> ToolResult: ...

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def reset(self) -> None: ...

    @abstractmethod
    async def save_state(self) -> Mapping[str, Any]: ...

    @abstractmethod
    async def load_state(self, state: Mapping[str, Any]) -> None: ...

    async def __aenter__(self) -> "Workbench":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


class FunctionTool:
    def __init__(self, func: Callable[..., Any], description: str, name: str | None = None, global_imports: Any = ()) -> None:
        self._func = func
        self._name = name or func.__name__
        self._description = description

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        return self._description

    @property
    def schema(self) -> ToolSchema:
        return {"name": self._name, "description": self._description, "parameters": {"type": "object", "properties": {}}}

    async def run_json(self, args: Mapping[str, Any], cancellation_token: CancellationToken, call_id: str | None = None) -> Any:
        if asyncio.iscoroutinefunction(self._func):
            return await self._func(**args)
        # As in AutoGen: a sync function runs in the default executor, without the caller's context variables.
        return await asyncio.get_event_loop().run_in_executor(None, functools.partial(self._func, **args))

    def return_value_as_string(self, value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value)
