"""The hot commands of ``sim.memstore.MemoryStore``, read straight from their effects.

``MemoryStore.execute`` takes any store effect the way Redis takes a command: the
``args`` tuple, the command table, the arity check, every argument converted as redis-py
would send it. For the commands the main job sends most (heartbeats' ZADD, the instance
records' HSET, HGET, HGETALL and RPUSH, the pools' SADD, SREM and ZREM, the usage
counters' HINCRBY and ZINCRBY), a function here reads
the effect's fields directly when they already are what Redis would read (str keys,
members and values; float scores that are not NaN; at least one of each) and otherwise
hands the effect to ``execute``, so an unusual argument meets exactly Redis's rules and
errors (a key of another type too: ``execute`` raises WRONGTYPE). Each function
counts the command and honours the outage switch as ``execute`` does;
``tests/sim/test_store_paths.py`` holds the two paths to the same answers, errors and
store contents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from common.effects import HGet, HGetAll, HIncrBy, HSet, RPush, SAdd, SRem, ZAdd, ZIncrBy, ZRem
from sim.memstore_values import INT64, RedisSet, SortedSet, integer


def _all_text(values) -> bool:
    for value in values:  # noqa: SIM110 (a loop costs less than all() over a generator)
        if type(value) is not str:
            return False
    return True


def zadd(store, effect: ZAdd):
    key, mapping = effect.key, effect.mapping
    if store.down or type(key) is not str or not mapping:
        return store.execute(effect)
    for member, score in mapping.items():
        if type(member) is not str or type(score) is not float or score != score:
            return store.execute(effect)
    zset = store.data.get(key)
    if type(zset) is not SortedSet:
        if zset is not None:  # WRONGTYPE, raised as execute raises it
            return store.execute(effect)
        zset = store.data[key] = SortedSet()
    store.commands += 1
    before = len(zset.scores)
    for member, score in mapping.items():
        zset.set(member, score)
    return len(zset.scores) - before


def hset(store, effect: HSet):
    key, mapping = effect.key, effect.mapping
    if store.down or type(key) is not str or not mapping or not _all_text(mapping) or not _all_text(mapping.values()):
        return store.execute(effect)
    fields = store.data.get(key)
    if type(fields) is not dict:
        if fields is not None:
            return store.execute(effect)
        fields = store.data[key] = {}
    store.commands += 1
    before = len(fields)
    fields.update(mapping)
    return len(fields) - before


def hgetall(store, effect: HGetAll):
    key = effect.key
    if store.down or type(key) is not str:
        return store.execute(effect)
    fields = store.data.get(key)
    if fields is None:
        store.commands += 1
        return {}
    if type(fields) is not dict:
        return store.execute(effect)
    store.commands += 1
    return dict(fields)


def hget(store, effect: HGet):
    key, name = effect.key, effect.field
    if store.down or type(key) is not str or type(name) is not str:
        return store.execute(effect)
    fields = store.data.get(key)
    if fields is None:
        store.commands += 1
        return None
    if type(fields) is not dict:
        return store.execute(effect)
    store.commands += 1
    return fields.get(name)


def rpush(store, effect: RPush):
    key, values = effect.key, effect.values
    if store.down or type(key) is not str or not values or not _all_text(values):
        return store.execute(effect)
    store.commands += 1
    items = store._created(key, list)
    items.extend(values)
    return len(items)


def sadd(store, effect: SAdd):
    key, members = effect.key, effect.members
    if store.down or type(key) is not str or not members or not _all_text(members):
        return store.execute(effect)
    store.commands += 1
    add = store._created(key, RedisSet).add
    added = 0
    for member in members:
        added += add(member)
    return added


def srem(store, effect: SRem):
    return _remove(store, effect, RedisSet)


def zrem(store, effect: ZRem):
    return _remove(store, effect, SortedSet)


def _remove(store, effect: SRem | ZRem, kind: type):
    key, members = effect.key, effect.members
    if store.down or type(key) is not str or not members or not _all_text(members):
        return store.execute(effect)
    store.commands += 1
    found = store._typed(key, kind)
    if found is None:
        return 0
    removed = 0
    for member in members:
        removed += found.remove(member)
    if not found:
        del store.data[key]
    return removed


#: The integers a double holds exactly: a ZINCRBY amount past them goes through ``execute``.
_EXACT = 2**53


def hincrby(store, effect: HIncrBy):
    key, name, amount = effect.key, effect.field, effect.amount
    if store.down or type(key) is not str or type(name) is not str or type(amount) is not int:
        return store.execute(effect)
    fields = store.data.get(key)
    current = 0
    if fields is not None:
        if type(fields) is not dict:
            return store.execute(effect)
        value = fields.get(name)
        if value is not None:
            try:
                current = integer(value)
            except ResponseError:
                return store.execute(effect)
    total = current + amount
    if not INT64[0] <= amount <= INT64[1] or not INT64[0] <= total <= INT64[1]:
        return store.execute(effect)
    if fields is None:
        fields = store.data[key] = {}
    store.commands += 1
    fields[name] = str(total)
    return total


def zincrby(store, effect: ZIncrBy):
    key, amount, member = effect.key, effect.amount, effect.member
    kind = type(amount)
    if store.down or type(key) is not str or type(member) is not str or not (
            (kind is int and -_EXACT <= amount <= _EXACT) or (kind is float and amount - amount == 0.0)):
        return store.execute(effect)  # also a NaN or infinite amount
    zset = store.data.get(key)
    if type(zset) is not SortedSet:
        if zset is not None:
            return store.execute(effect)
        zset = store.data[key] = SortedSet()
    score = amount + zset.scores.get(member, 0.0)
    store.commands += 1
    zset.set(member, score)
    return score


#: Store effect class -> its direct function ``(store, effect)``.
FAST: dict[type, Callable[[Any, Any], Any]] = {
    ZAdd: zadd,
    HSet: hset,
    HGetAll: hgetall,
    HGet: hget,
    RPush: rpush,
    SAdd: sadd,
    SRem: srem,
    ZRem: zrem,
    HIncrBy: hincrby,
    ZIncrBy: zincrby,
}
