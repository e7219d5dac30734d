"""The fast simulated datastore: the Redis commands the managers use, on plain Python objects.

``MemoryStore`` is a ``common.performers.StorePerformer`` like ``sim.store.SimStore``
(fakeredis), without a socket, a protocol or a byte in between: a command is one method
call on dicts, lists and sorted lists. The 500-host run makes about 450,000 store
commands; here each costs about a microsecond instead of fakeredis's tens. A scenario
picks it with ``sim.store: memory`` (the default) or keeps fakeredis with
``sim.store: fakeredis``.

*Features*

- Exactly the commands of ``common.effects``' store effects, with Redis 7's semantics and
  the reply types redis-py gives with ``decode_responses`` (``SETNX`` -> bool, scores ->
  float, ``HGETALL`` -> dict, ``SMEMBERS`` -> set, ``ZRANGEBYSCORE ... WITHSCORES`` ->
  list of ``(member, float)``): keys of one type each, ``WRONGTYPE`` for a command on a
  key of another type, empty hashes, sets, lists and sorted sets deleted, arity and
  argument errors with Redis's messages (redis-py's ``ResponseError``), arguments
  converted as redis-py converts them (int and float through ``repr``; bool and None
  refused with redis-py's ``DataError``), 64-bit overflow of ``HINCRBY``, NaN refused.
- ``SPOP`` is deterministic from the seed it is given: it draws as fakeredis 2.40+ does
  (the set's members listed in insertion order, ``randrange``, the last member moved into
  the hole), so a run seeded alike picks the same members on both sim stores and the
  whole trace (fingerprint included) comes out the same: ``tests/sim/test_store_diff.py``
  holds the two to that.
- Sorted sets are ordered by score, then by member (code point order, which is UTF-8
  byte order, as Redis compares).
- Guarded transactions, batches (one round trip, EXEC's error rule) and the outage
  switch as ``SimStore`` has them (shared code: ``sim.store.StoreFront``).
- The bounded reads too (``ZRANGE`` by rank, ``ZCOUNT``, ``ZMSCORE``, ``SMISMEMBER``),
  ready for the store effects that send them.
- Its state and its draws never depend on string hashing (``PYTHONHASHSEED``): hashes,
  sets and lists keep insertion order, as fakeredis does. ``SMEMBERS`` answers a Python
  set, as redis-py does, so a caller that iterates one must sort it.
- New commands: a method decorated with ``@command(NAME, arity)`` taking the command's
  arguments as a tuple; the store contract suite lists a case per store effect.

*Not supported*

- Commands no store effect sends, and the options of supported commands that no effect
  uses (``SPOP`` with a count; ``ZADD``'s ``NX|XX|GT|LT|CH|INCR``; ``ZRANGE`` other than
  by rank: ``BYSCORE``, ``BYLEX``, ``REV``, ``LIMIT``): they raise
  ``NotImplementedError`` naming what is missing rather than give a made-up Redis reply.
  (``ZRANGEBYSCORE`` has ``WITHSCORES`` and ``LIMIT offset count``.)
- Expiry (TTLs), keyspace notifications, databases other than one, memory limits,
  persistence, replication, latency (the runtime waits the scenario's store latency).
- Hexadecimal float arguments (``0x1p3``), which Redis's ``strtod`` would read.
- Byte strings that are not UTF-8: values are ``str`` (redis-py's ``decode_responses``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from functools import partial
from typing import Any

from redis.exceptions import ResponseError

from sim.memstore_fast import FAST
from sim.memstore_values import (
    INT64,
    WRONGTYPE,
    RedisSet,
    SortedSet,
    as_text,
    bound,
    double,
    error,
    integer,
    position,
    range_options,
)
from sim.store import SimStore, StoreFront

#: name -> (method, arity): Redis's arity counts the command name, negative means "at least".
COMMANDS: dict[str, tuple[Callable[..., Any], int]] = {}


def command(name: str, arity: int):
    """Register the decorated method as the implementation of Redis command ``name``."""

    def register(method):
        COMMANDS[name] = (method, arity)
        return method

    return register


class MemoryStore(StoreFront):
    """The run's datastore on plain Python objects; a ``common.performers.StorePerformer``."""

    kind = "memory"

    def __init__(self, seed: int = 0):
        """``seed``: SPOP's random stream (``random.Random(seed)``, which draws as the
        global stream seeded with ``random.seed(seed)`` that fakeredis uses)."""
        super().__init__()
        self.data: dict[str, Any] = {}
        self.rng = random.Random(seed)

    def make_executor(self, kind: type) -> Callable[[Any], Any]:
        """The hot commands read straight from their effects (``sim.memstore_fast``);
        the others through ``execute``."""
        fast = FAST.get(kind)
        return self.execute if fast is None else partial(fast, self)

    def execute(self, command):
        self.commands += 1
        if self.down:
            self.unavailable(command.command)
        name = command.command
        entry = COMMANDS.get(name)
        if entry is None:
            raise NotImplementedError(f"MemoryStore does not model the Redis command {name}")
        method, arity = entry
        args = command.args
        if (len(args) + 1 != arity) if arity > 0 else (len(args) + 1 < -arity):
            raise error(f"ERR wrong number of arguments for '{name.lower()}' command")
        return method(self, args)

    def guard_holds(self, guard) -> bool:
        self.commands += 1
        fields = self._typed(as_text(guard.key), dict)
        return (fields.get(as_text(guard.field)) if fields is not None else None) == guard.expected

    def _typed(self, key: str, kind: type):
        """The value at ``key`` if it is a ``kind`` (None when missing); WRONGTYPE if not."""
        value = self.data.get(key)
        if value is not None and type(value) is not kind:
            raise error(WRONGTYPE)
        return value

    def _created(self, key: str, kind: type):
        value = self._typed(key, kind)
        if value is None:
            value = self.data[key] = kind()
        return value

    # -- strings and keys --------------------------------------------------------

    @command("GET", 2)
    def _get(self, args):
        return self._typed(as_text(args[0]), str)

    @command("SETNX", 3)
    def _setnx(self, args):
        key, value = as_text(args[0]), as_text(args[1])
        if key in self.data:
            return False
        self.data[key] = value
        return True

    @command("DEL", -2)
    def _del(self, args):
        data = self.data
        return sum(data.pop(key, None) is not None for key in map(as_text, args))

    # -- hashes ----------------------------------------------------------------

    @command("HGET", 3)
    def _hget(self, args):
        fields = self._typed(as_text(args[0]), dict)
        return None if fields is None else fields.get(as_text(args[1]))

    @command("HGETALL", 2)
    def _hgetall(self, args):
        fields = self._typed(as_text(args[0]), dict)
        return {} if fields is None else dict(fields)

    @command("HSET", -4)
    def _hset(self, args):
        if len(args) % 2 == 0:
            raise error("ERR wrong number of arguments for 'hset' command")
        pairs = {}  # every argument converted before anything is written
        for i in range(1, len(args), 2):
            name, value = args[i], args[i + 1]
            pairs[name if type(name) is str else as_text(name)] = value if type(value) is str else as_text(value)
        fields = self._created(as_text(args[0]), dict)
        before = len(fields)
        fields.update(pairs)
        return len(fields) - before

    @command("HDEL", -3)
    def _hdel(self, args):
        key = as_text(args[0])
        fields = self._typed(key, dict)
        if fields is None:
            return 0
        removed = sum(fields.pop(name, self) is not self for name in map(as_text, args[1:]))
        if not fields:
            del self.data[key]
        return removed

    @command("HINCRBY", 4)
    def _hincrby(self, args):
        key, name, amount = as_text(args[0]), as_text(args[1]), integer(args[2])
        fields = self._typed(key, dict)
        current = 0
        if fields is not None and name in fields:
            try:
                current = integer(fields[name])
            except ResponseError:
                raise error("ERR hash value is not an integer") from None
        total = current + amount
        if not INT64[0] <= total <= INT64[1]:
            raise error("ERR increment or decrement would overflow")
        self._created(key, dict)[name] = str(total)
        return total

    # -- sets ------------------------------------------------------------------

    @command("SADD", -3)
    def _sadd(self, args):
        members = [m if type(m) is str else as_text(m) for m in args[1:]]
        add = self._created(as_text(args[0]), RedisSet).add
        added = 0
        for member in members:
            added += add(member)
        return added

    @command("SREM", -3)
    def _srem(self, args):
        key = as_text(args[0])
        members = self._typed(key, RedisSet)
        if members is None:
            return 0
        removed = sum(members.discard(m) for m in map(as_text, args[1:]))
        if not members.members:
            del self.data[key]
        return removed

    @command("SMISMEMBER", -3)
    def _smismember(self, args):
        members = self._typed(as_text(args[0]), RedisSet)
        known = members.members if members is not None else {}
        return [1 if as_text(m) in known else 0 for m in args[1:]]

    @command("SMEMBERS", 2)
    def _smembers(self, args):
        members = self._typed(as_text(args[0]), RedisSet)
        return set() if members is None else set(members.members)

    @command("SCARD", 2)
    def _scard(self, args):
        members = self._typed(as_text(args[0]), RedisSet)
        return 0 if members is None else len(members.members)

    @command("SPOP", -2)
    def _spop(self, args):
        if len(args) > 1:
            raise NotImplementedError("MemoryStore does not model SPOP with a count")
        key = as_text(args[0])
        members = self._typed(key, RedisSet)
        if members is None:
            return None
        member = members.pop(self.rng)
        if not members.members:
            del self.data[key]
        return member

    # -- sorted sets -------------------------------------------------------------

    @command("ZADD", -4)
    def _zadd(self, args):
        if isinstance(args[1], str) and args[1].upper() in ("NX", "XX", "GT", "LT", "CH", "INCR"):
            raise NotImplementedError(f"MemoryStore does not model ZADD {args[1].upper()}")
        if len(args) % 2 == 0:
            raise error("ERR syntax error")
        pairs = []  # every argument converted before anything is written
        for i in range(1, len(args), 2):
            score, member = args[i], args[i + 1]
            pairs.append((member if type(member) is str else as_text(member),
                          score if type(score) is float and score == score else double(score)))
        zset = self._created(as_text(args[0]), SortedSet)
        before = len(zset.scores)
        for member, score in pairs:
            zset.set(member, score)
        return len(zset.scores) - before

    @command("ZINCRBY", 4)
    def _zincrby(self, args):
        key, amount, member = as_text(args[0]), double(args[1]), as_text(args[2])
        zset = self._typed(key, SortedSet)
        score = amount + (zset.scores.get(member, 0.0) if zset is not None else 0.0)
        if math.isnan(score):
            raise error("ERR resulting score is not a number (NaN)")
        self._created(key, SortedSet).set(member, score)
        return score

    @command("ZREM", -3)
    def _zrem(self, args):
        key = as_text(args[0])
        zset = self._typed(key, SortedSet)
        if zset is None:
            return 0
        removed = sum(zset.remove(m) for m in map(as_text, args[1:]))
        if not zset.scores:
            del self.data[key]
        return removed

    @command("ZSCORE", 3)
    def _zscore(self, args):
        zset = self._typed(as_text(args[0]), SortedSet)
        return None if zset is None else zset.scores.get(as_text(args[1]))

    @command("ZMSCORE", -3)
    def _zmscore(self, args):
        zset = self._typed(as_text(args[0]), SortedSet)
        scores = zset.scores if zset is not None else {}
        return [scores.get(as_text(m)) for m in args[1:]]

    @command("ZCOUNT", 4)
    def _zcount(self, args):
        (low, low_open), (high, high_open) = bound(args[1]), bound(args[2])
        zset = self._typed(as_text(args[0]), SortedSet)
        if zset is None:
            return 0
        ordered = zset.ordered
        return max(position(ordered, high, not high_open) - position(ordered, low, low_open), 0)

    @command("ZRANGE", -4)
    def _zrange(self, args):
        options = [as_text(o).upper() for o in args[3:]]
        if any(o != "WITHSCORES" for o in options):
            unsupported = " ".join(o for o in options if o != "WITHSCORES")
            raise NotImplementedError(f"MemoryStore models ZRANGE by rank only (with WITHSCORES), not {unsupported}")
        start, stop = integer(args[1]), integer(args[2])
        zset = self._typed(as_text(args[0]), SortedSet)
        if zset is None:
            return []
        ordered = zset.ordered
        size = len(ordered)
        start = max(start + size, 0) if start < 0 else start
        stop = stop + size if stop < 0 else min(stop, size - 1)
        if start > stop:
            return []
        rows = ordered[start:stop + 1]
        return [(member, score) for score, member in rows] if options else [member for _, member in rows]

    @command("ZRANGEBYSCORE", -4)
    def _zrangebyscore(self, args):
        withscores, offset, count = range_options(args[3:])  # Redis reads the options first
        (low, low_open), (high, high_open) = bound(args[1]), bound(args[2])
        zset = self._typed(as_text(args[0]), SortedSet)
        if zset is None or offset < 0 or (low_open and low == math.inf):
            return []
        ordered = zset.ordered
        if low_open:  # above low: from the next float up
            low = math.nextafter(low, math.inf)
        # A one-element tuple sorts before every (score, member) pair of its score.
        start = ordered.bisect_left((low,))
        rows = []
        for score, member in ordered.islice(start + offset):
            if score > high or (high_open and score == high) or len(rows) == count:
                break
            rows.append((member, score) if withscores else member)
        return rows

    # -- lists -----------------------------------------------------------------

    @command("RPUSH", -3)
    def _rpush(self, args):
        values = [as_text(v) for v in args[1:]]
        items = self._created(as_text(args[0]), list)
        items.extend(values)
        return len(items)

    @command("LRANGE", 4)
    def _lrange(self, args):
        start, stop = integer(args[1]), integer(args[2])
        items = self._typed(as_text(args[0]), list)
        if items is None:
            return []
        size = len(items)
        start = max(start + size, 0) if start < 0 else start
        stop = stop + size if stop < 0 else min(stop, size - 1)
        return items[start:stop + 1] if start <= stop else []

    # -- instrumentation (not effects) --------------------------------------------

    def scard(self, key: str) -> int:
        """An instrumentation read: not a manager's effect, not counted."""
        members = self._typed(key, RedisSet)
        return 0 if members is None else len(members.members)

    def flush(self) -> int:
        """Forget every key; returns how many there were."""
        count = len(self.data)
        self.data = {}
        return count

    def dump(self) -> dict:
        """Every key with its value as a Python object (the invariant checkers' input)."""
        readers: dict[type, Callable[[Any], Any]] = {
            str: lambda v: v,
            dict: dict,
            RedisSet: lambda v: set(v.members),
            list: list,
            SortedSet: lambda v: {member: score for score, member in v.ordered},
        }
        return {key: readers[type(value)](value) for key, value in self.data.items()}


#: A scenario's ``sim.store`` -> the store of a run with a given seed.
STORES: dict[str, Callable[[int], StoreFront]] = {
    MemoryStore.kind: MemoryStore,
    SimStore.kind: lambda seed: SimStore(),  # SPOP draws from the global stream, seeded by the run
}


def make_store(kind: str, seed: int) -> StoreFront:
    """The store a scenario's ``sim.store`` names, for a run with ``seed``."""
    try:
        return STORES[kind](seed)
    except KeyError:
        raise ValueError(f"sim.store: {kind!r} is not a sim store (expected one of: {', '.join(STORES)})") from None
