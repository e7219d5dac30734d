"""The runtime family: time, ids, randomness and records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.effects.families import RuntimeEffect

# Time, identity, randomness, observation: effects too, so a run is a function of
# scenario, seed and commit.


@dataclass(frozen=True)
class Now(RuntimeEffect):
    """-> the current time in seconds (virtual in sim). Never raises."""

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.now()

    @classmethod
    def bind(cls, performer: Any) -> Callable[[Any, Any], Any]:
        # The commonest effect (a heartbeat, every transition): one call, not three; a
        # performer may offer that call itself, already taking (agent, effect).
        handler = getattr(performer, "now_handler", None)
        if handler is not None:
            return handler
        now = performer.now
        return lambda agent, effect: now()


@dataclass(frozen=True)
class Sleep(RuntimeEffect):
    """Wait ``seconds``. Never raises."""

    seconds: float

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.sleep(self.seconds)


@dataclass(frozen=True)
class NewId(RuntimeEffect):
    """-> a fresh id ``<prefix>-`` plus 8 base-36 characters, unique within the run.
    Never raises."""

    prefix: str

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.new_id(self.prefix)


@dataclass(frozen=True)
class Choose(RuntimeEffect):
    """-> one of ``options``, drawn from the component's seeded stream. Raises
    ValueError when ``options`` is empty. ``options`` is a tuple, or a range to draw an
    index without building the list."""

    options: tuple | range

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.choose(agent, self.options)


@dataclass(frozen=True)
class Record(RuntimeEffect):
    """Hand ``event`` (a frozen dataclass) to the run's recorder. Takes no time, never
    raises; it is how managers report what a store snapshot cannot show."""

    event: Any = field(default=None)

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.record(self.event)

    @classmethod
    def bind(cls, performer: Any) -> Callable[[Any, Any], Any]:
        record = performer.record
        return lambda agent, effect: record(effect.event)
