"""The store family: one effect per Redis command, and the guarded transaction."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from common.effects.families import StoreEffect

# Store: one effect per Redis command.  All may raise StoreUnavailable.


@dataclass(frozen=True)
class StoreCommand(StoreEffect):
    """Base of the one-command store effects; ``args`` is what follows the command name."""

    command: ClassVar[str] = ""

    @property
    def args(self) -> tuple:
        raise NotImplementedError

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.execute(self)

    @classmethod
    def bind(cls, performer: Any) -> Callable[[Any, Any], Any]:
        # The hot path (~300,000 commands in the 500-host run): one call, not two. A
        # store class with ``executor(kind)`` gives a function for this class's commands
        # (looked up on the class: a wrapper forwarding attributes must not hand out
        # its inner store's).
        executor = getattr(type(performer), "executor", None)
        execute = executor(performer, cls) if executor is not None else performer.execute
        return lambda agent, effect: execute(effect)


@dataclass(frozen=True)
class Get(StoreCommand):
    """GET key -> str or None. Idempotent."""

    command: ClassVar[str] = "GET"
    key: str

    @property
    def args(self):
        return (self.key,)


@dataclass(frozen=True)
class SetNX(StoreCommand):
    """SETNX key value -> True when this call set it. Idempotent in effect."""

    command: ClassVar[str] = "SETNX"
    key: str
    value: str

    @property
    def args(self):
        return (self.key, self.value)


@dataclass(frozen=True)
class Del(StoreCommand):
    """DEL keys... -> how many existed. Idempotent."""

    command: ClassVar[str] = "DEL"
    keys: tuple[str, ...]

    @property
    def args(self):
        return self.keys


@dataclass(frozen=True)
class HGet(StoreCommand):
    """HGET key field -> str or None. Idempotent."""

    command: ClassVar[str] = "HGET"
    key: str
    field: str

    @property
    def args(self):
        return (self.key, self.field)


@dataclass(frozen=True)
class HGetAll(StoreCommand):
    """HGETALL key -> dict of str (empty when the key is missing). Idempotent."""

    command: ClassVar[str] = "HGETALL"
    key: str

    @property
    def args(self):
        return (self.key,)


@dataclass(frozen=True)
class HSet(StoreCommand):
    """HSET key field value [field value ...] -> fields added. Idempotent."""

    command: ClassVar[str] = "HSET"
    key: str
    mapping: Mapping[str, str]

    @property
    def args(self):
        flat = []
        for k, v in self.mapping.items():
            flat += (k, v)
        return (self.key, *flat)


@dataclass(frozen=True)
class HDel(StoreCommand):
    """HDEL key fields... -> how many were removed. Idempotent."""

    command: ClassVar[str] = "HDEL"
    key: str
    fields: tuple[str, ...]

    @property
    def args(self):
        return (self.key, *self.fields)


@dataclass(frozen=True)
class HIncrBy(StoreCommand):
    """HINCRBY key field amount -> the new value. Not idempotent."""

    command: ClassVar[str] = "HINCRBY"
    key: str
    field: str
    amount: int

    @property
    def args(self):
        return (self.key, self.field, self.amount)


@dataclass(frozen=True)
class SAdd(StoreCommand):
    """SADD key members... -> how many were new. Idempotent."""

    command: ClassVar[str] = "SADD"
    key: str
    members: tuple[str, ...]

    @property
    def args(self):
        return (self.key, *self.members)


@dataclass(frozen=True)
class SRem(StoreCommand):
    """SREM key members... -> how many were removed. Idempotent."""

    command: ClassVar[str] = "SREM"
    key: str
    members: tuple[str, ...]

    @property
    def args(self):
        return (self.key, *self.members)


@dataclass(frozen=True)
class SMembers(StoreCommand):
    """SMEMBERS key -> set of str. Idempotent."""

    command: ClassVar[str] = "SMEMBERS"
    key: str

    @property
    def args(self):
        return (self.key,)


@dataclass(frozen=True)
class SCard(StoreCommand):
    """SCARD key -> int. Idempotent."""

    command: ClassVar[str] = "SCARD"
    key: str

    @property
    def args(self):
        return (self.key,)


@dataclass(frozen=True)
class SPop(StoreCommand):
    """SPOP key -> one member removed atomically, or None when empty. Not idempotent:
    each call takes a different member, which is why pools are drained this way."""

    command: ClassVar[str] = "SPOP"
    key: str

    @property
    def args(self):
        return (self.key,)


@dataclass(frozen=True)
class ZAdd(StoreCommand):
    """ZADD key score member [score member ...] -> how many were new. Idempotent."""

    command: ClassVar[str] = "ZADD"
    key: str
    mapping: Mapping[str, float]

    @property
    def args(self):
        flat = []
        for member, score in self.mapping.items():
            flat += (score, member)
        return (self.key, *flat)


@dataclass(frozen=True)
class ZIncrBy(StoreCommand):
    """ZINCRBY key amount member -> the new score. Not idempotent."""

    command: ClassVar[str] = "ZINCRBY"
    key: str
    amount: float
    member: str

    @property
    def args(self):
        return (self.key, self.amount, self.member)


@dataclass(frozen=True)
class ZRem(StoreCommand):
    """ZREM key members... -> how many were removed. Idempotent."""

    command: ClassVar[str] = "ZREM"
    key: str
    members: tuple[str, ...]

    @property
    def args(self):
        return (self.key, *self.members)


@dataclass(frozen=True)
class ZScore(StoreCommand):
    """ZSCORE key member -> float or None. Idempotent."""

    command: ClassVar[str] = "ZSCORE"
    key: str
    member: str

    @property
    def args(self):
        return (self.key, self.member)


@dataclass(frozen=True)
class ZRangeByScore(StoreCommand):
    """ZRANGEBYSCORE key min max WITHSCORES [LIMIT offset count] -> [(member, score)],
    lowest score first, the first ``offset`` of them skipped (only with a ``count``).
    Idempotent. ``min``/``max`` take Redis syntax ("-inf", "(5")."""

    command: ClassVar[str] = "ZRANGEBYSCORE"
    key: str
    min: str
    max: str
    count: int | None = None
    offset: int = 0

    @property
    def args(self):
        limit = ("LIMIT", self.offset, self.count) if self.count is not None else ()
        return (self.key, self.min, self.max, "WITHSCORES", *limit)


@dataclass(frozen=True)
class ZMScore(StoreCommand):
    """ZMSCORE key members... -> [float or None], one per member, in order. Idempotent."""

    command: ClassVar[str] = "ZMSCORE"
    key: str
    members: tuple[str, ...]

    @property
    def args(self):
        return (self.key, *self.members)


@dataclass(frozen=True)
class ZCount(StoreCommand):
    """ZCOUNT key min max -> how many members score within the bounds (Redis syntax, as
    ``ZRangeByScore``'s). O(log N): it counts by rank. Idempotent."""

    command: ClassVar[str] = "ZCOUNT"
    key: str
    min: str
    max: str

    @property
    def args(self):
        return (self.key, self.min, self.max)


@dataclass(frozen=True)
class ZRange(StoreCommand):
    """ZRANGE key start stop WITHSCORES -> [(member, score)] of the ranks ``start`` to
    ``stop`` (inclusive; negative counts from the highest score), lowest score first.
    O(log N) plus the rows returned. Idempotent."""

    command: ClassVar[str] = "ZRANGE"
    key: str
    start: int
    stop: int

    @property
    def args(self):
        return (self.key, self.start, self.stop, "WITHSCORES")


@dataclass(frozen=True)
class RPush(StoreCommand):
    """RPUSH key values... -> the new length. Not idempotent (appends again)."""

    command: ClassVar[str] = "RPUSH"
    key: str
    values: tuple[str, ...]

    @property
    def args(self):
        return (self.key, *self.values)


@dataclass(frozen=True)
class LRange(StoreCommand):
    """LRANGE key start stop -> list of str. Idempotent."""

    command: ClassVar[str] = "LRANGE"
    key: str
    start: int = 0
    stop: int = -1

    @property
    def args(self):
        return (self.key, self.start, self.stop)


@dataclass(frozen=True)
class Guard:
    """A precondition: hash ``key`` has ``field`` equal to ``expected`` (None = absent)."""

    key: str
    field: str
    expected: str | None


@dataclass(frozen=True)
class Transaction(StoreEffect):
    """Run ``ops`` atomically, only if every guard holds at that instant.

    Returns the list of the ops' results, or None when a guard failed (nothing was
    written). This is the compare-and-set that keeps a late or redelivered message from
    moving state backwards. Real runner: one Lua script; sim runner: the commands run at
    one instant of virtual time. Idempotent only if its ops are.
    """

    ops: tuple[StoreCommand, ...]
    guards: tuple[Guard, ...] = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.transaction(self)

    @classmethod
    def bind(cls, performer: Any) -> Callable[[Any, Any], Any]:
        transaction = performer.transaction
        return lambda agent, effect: transaction(effect)


@dataclass(frozen=True)
class Batch(StoreEffect):
    """Run ``ops`` in one round trip (a pipeline), in order; -> their results.

    Not atomic: another client's command may land between two ops (use ``Transaction``
    for that). Like EXEC, an op the store refuses does not stop the others; the first
    such error is raised after them. Idempotent only if its ops are.
    """

    ops: tuple[StoreCommand, ...]

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.batch(self)
