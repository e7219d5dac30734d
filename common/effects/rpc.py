"""The RPC family: cast and call between services."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.effects.families import RpcEffect

# RPC


@dataclass(frozen=True)
class Cast(RpcEffect):
    """Publish ``method(**args)`` to ``topic`` and do not wait.

    Returns None once the broker has routed it. Raises Unroutable when no queue is bound
    to the topic (published mandatory), StoreUnavailable-like transport errors as
    Unroutable too. Not idempotent: the receiver sees it once per cast.
    """

    topic: str
    method: str
    args: Mapping[str, Any]
    context: Any = None

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.cast(agent, self)


@dataclass(frozen=True)
class Call(RpcEffect):
    """Publish ``method(**args)`` to ``topic`` and wait for the reply.

    Returns the callee's return value. Raises RemoteError when the callee raised,
    RpcTimeout when no reply came within ``timeout`` seconds (the callee may still have
    run: callers must make the outcome safe either way; 2010 had no timeout, we do), and
    Unroutable when no queue is bound. A reply arriving after the timeout is dropped.
    """

    topic: str
    method: str
    args: Mapping[str, Any]
    context: Any = None
    timeout: float = 30.0

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.call(agent, self)
