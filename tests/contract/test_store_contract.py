"""The store contract: one set of test bodies, run against both sim stores, SimStore
(fakeredis) and MemoryStore (plain Python objects), and against RedisStore (a live
Redis), so the simulation's stores answer exactly as the real one.

A test asks for ``store`` (a fresh, empty store of the backend under test) or for
``new_store`` (a factory of such stores). Real stores get a prefix of their own and are
flushed after the test. Tests that only make sense for RedisStore say so in their name.
"""

import re
import socket
from typing import Any
from uuid import uuid4

import pytest
from redis.exceptions import DataError, ResponseError

from common import effects as fx
from common.effects import Guard, Transaction
from common.errors import StoreUnavailable
from real.store import RedisStore
from sim.memstore import COMMANDS, MemoryStore
from sim.store import SimStore


def factory(kind, request):
    """-> (make, cleanup): ``make()`` gives an empty store of ``kind``."""
    made = []

    def make():
        if kind == "fakeredis":
            store = SimStore()
        elif kind == "memory":
            store = MemoryStore(seed=len(made))
        else:
            url = request.getfixturevalue("redis_url")  # only here: the fake needs no Redis
            store = RedisStore(url, prefix=f"novalab-test-{uuid4().hex}:")
        made.append(store)
        return store

    def cleanup():
        for store in made:
            if isinstance(store, RedisStore):
                store.flush()
                store.close()

    return make, cleanup


@pytest.fixture(params=["fakeredis", "memory", "real"])
def new_store(request):
    """A factory of empty stores of the backend under test; real ones are flushed after."""
    make, cleanup = factory(request.param, request)
    yield make
    cleanup()


@pytest.fixture
def store(new_store):
    return new_store()


@pytest.fixture
def new_real_store(request):
    """A factory of empty RedisStores, each with a prefix of its own."""
    make, cleanup = factory("real", request)
    yield make
    cleanup()


@pytest.fixture
def real_store(new_real_store):
    return new_real_store()


def shape(value):
    """``value`` with its type at every level, so 1 != 1.0, True != 1, a tuple != a list."""
    if isinstance(value, dict):
        return ("dict", sorted((shape(k), shape(v)) for k, v in value.items()))
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted(shape(v) for v in value))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [shape(v) for v in value])
    return (type(value).__name__, value)


def run_all(store, *commands):
    return [store.execute(c) for c in commands]


# ---------------------------------------------------------------------------
# Every StoreCommand: (setup, command, exact result), checked by value and type.

H = fx.HSet("h", {"a": "1", "b": "2"})
Z = fx.ZAdd("z", {"x": 1, "y": 2.5})
CASES = {
    "get-missing": ((), fx.Get("k"), None),
    "get": ((fx.SetNX("k", "v"),), fx.Get("k"), "v"),
    "setnx-new": ((), fx.SetNX("k", "v"), True),
    "setnx-taken": ((fx.SetNX("k", "v"),), fx.SetNX("k", "w"), False),
    "del": ((fx.SetNX("a", "1"), H), fx.Del(("a", "h", "missing")), 2),
    "hget": ((H,), fx.HGet("h", "a"), "1"),
    "hget-missing-field": ((H,), fx.HGet("h", "zz"), None),
    "hgetall": ((H,), fx.HGetAll("h"), {"a": "1", "b": "2"}),
    "hgetall-missing": ((), fx.HGetAll("h"), {}),
    "hset-new": ((), H, 2),
    "hset-overwrite": ((H,), fx.HSet("h", {"a": "9", "c": "3"}), 1),
    "hincrby-new": ((), fx.HIncrBy("h", "n", 3), 3),
    "hincrby": ((H,), fx.HIncrBy("h", "b", -5), -3),
    "hdel": ((H,), fx.HDel("h", ("a", "zz")), 1),
    "hdel-missing": ((), fx.HDel("h", ("a",)), 0),
    "sadd": ((), fx.SAdd("s", ("a", "b", "a")), 2),
    "sadd-existing": ((fx.SAdd("s", ("a",)),), fx.SAdd("s", ("a", "b")), 1),
    "srem": ((fx.SAdd("s", ("a", "b")),), fx.SRem("s", ("a", "zz")), 1),
    "smembers": ((fx.SAdd("s", ("a", "b")),), fx.SMembers("s"), {"a", "b"}),
    "smembers-missing": ((), fx.SMembers("s"), set()),
    "scard": ((fx.SAdd("s", ("a", "b")),), fx.SCard("s"), 2),
    "scard-missing": ((), fx.SCard("s"), 0),
    "spop": ((fx.SAdd("s", ("only",)),), fx.SPop("s"), "only"),
    "spop-missing": ((), fx.SPop("s"), None),
    "zadd": ((), Z, 2),
    "zadd-update": ((Z,), fx.ZAdd("z", {"x": 5, "w": 0}), 1),
    "zincrby": ((Z,), fx.ZIncrBy("z", 1, "y"), 3.5),
    "zincrby-new": ((), fx.ZIncrBy("z", 2, "m"), 2.0),
    "zrem": ((Z,), fx.ZRem("z", ("x", "zz")), 1),
    "zscore": ((Z,), fx.ZScore("z", "x"), 1.0),
    "zscore-missing": ((Z,), fx.ZScore("z", "zz"), None),
    "zrangebyscore": ((Z,), fx.ZRangeByScore("z", "-inf", "+inf"), [("x", 1.0), ("y", 2.5)]),
    "zrangebyscore-missing": ((), fx.ZRangeByScore("z", "-inf", "+inf"), []),
    "zmscore": ((Z,), fx.ZMScore("z", ("y", "zz", "x")), [2.5, None, 1.0]),
    "zmscore-missing": ((), fx.ZMScore("z", ("x",)), [None]),
    "zcount": ((Z,), fx.ZCount("z", "(1", "+inf"), 1),
    "zcount-missing": ((), fx.ZCount("z", "-inf", "+inf"), 0),
    "zrange": ((Z,), fx.ZRange("z", 0, -1), [("x", 1.0), ("y", 2.5)]),
    "zrange-from-the-top": ((Z,), fx.ZRange("z", -1, -1), [("y", 2.5)]),
    "zrange-missing": ((), fx.ZRange("z", 0, -1), []),
    "rpush": ((fx.RPush("l", ("a",)),), fx.RPush("l", ("b", "c")), 3),
    "lrange": ((fx.RPush("l", ("a", "b", "c")),), fx.LRange("l"), ["a", "b", "c"]),
    "lrange-slice": ((fx.RPush("l", ("a", "b", "c")),), fx.LRange("l", 1, 1), ["b"]),
    "lrange-missing": ((), fx.LRange("l"), []),
}


def test_every_store_command_has_a_case():
    """Each StoreCommand subclass in common.effects appears in CASES."""
    covered = {type(command) for _, command, _ in CASES.values()}
    assert set(fx.StoreCommand.__subclasses__()) <= covered


def test_every_store_command_is_modelled_by_the_memory_store():
    """MemoryStore implements the Redis command of each StoreCommand subclass."""
    assert {c.command for c in fx.StoreCommand.__subclasses__()} <= set(COMMANDS)


@pytest.mark.parametrize("name", CASES)
def test_execute_result(store, name):
    """execute() gives the same value of the same type on both backends."""
    setup, command, expected = CASES[name]
    run_all(store, *setup)
    assert shape(store.execute(command)) == shape(expected)


@pytest.mark.parametrize("name", CASES)
def test_transaction_result(store, name):
    """A command inside a transaction gives what execute() gives."""
    setup, command, expected = CASES[name]
    run_all(store, *setup)
    assert shape(store.transaction(Transaction(ops=(command,)))) == shape([expected])


# ---------------------------------------------------------------------------
# Semantics the managers rely on.


def test_spop_drains_a_set_then_gives_none(store):
    """SPOP hands out every member once, then None, and the empty set is gone."""
    store.execute(fx.SAdd("pool", ("10.0.0.2", "10.0.0.3", "10.0.0.4")))
    popped = [store.execute(fx.SPop("pool")) for _ in range(4)]
    assert set(popped[:3]) == {"10.0.0.2", "10.0.0.3", "10.0.0.4"} and popped[3] is None
    assert store.dump() == {}


def test_zrangebyscore_exclusive_bounds(store):
    """'(x' excludes x at either end."""
    store.execute(fx.ZAdd("z", {"a": 1, "b": 2, "c": 3, "d": 4}))
    assert store.execute(fx.ZRangeByScore("z", "(1", "(4")) == [("b", 2.0), ("c", 3.0)]
    assert store.execute(fx.ZRangeByScore("z", "-inf", "(2")) == [("a", 1.0)]


def test_zrangebyscore_limit_count(store):
    """count keeps the lowest-scored members, after the bounds are applied."""
    store.execute(fx.ZAdd("z", {"a": 1, "b": 2, "c": 3, "d": 4}))
    assert store.execute(fx.ZRangeByScore("z", "(1", "+inf", count=2)) == [("b", 2.0), ("c", 3.0)]


def test_zrangebyscore_orders_ties_by_member(store):
    """Equal scores come back in member order, whatever the insertion order."""
    store.execute(fx.ZAdd("z", {"c": 1, "a": 1, "b": 1}))
    assert [m for m, _ in store.execute(fx.ZRangeByScore("z", "-inf", "+inf"))] == ["a", "b", "c"]


def test_zincrby_accumulates_floats_alike(store):
    """ZINCRBY by 0.1 then 0.2 gives Python's 0.1 + 0.2 on both backends."""
    store.execute(fx.ZIncrBy("z", 0.1, "m"))
    assert store.execute(fx.ZIncrBy("z", 0.2, "m")) == 0.1 + 0.2


def test_wrong_type_raises_response_error(store):
    """A command on a key of another type raises redis-py's ResponseError."""
    store.execute(fx.SetNX("k", "v"))
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        store.execute(fx.HGet("k", "f"))


def test_non_ascii_values_round_trip(store):
    """Non-ASCII strings survive execute() and the transaction script."""
    store.transaction(Transaction(ops=(fx.HSet("h", {"name": "Zoë 日本"}),), guards=(Guard("h", "name", None),)))
    assert store.execute(fx.HGet("h", "name")) == "Zoë 日本"
    assert store.transaction(Transaction(ops=(), guards=(Guard("h", "name", "Zoë 日本"),))) == []


# ---------------------------------------------------------------------------
# Edges: Redis 7's answers (errors as redis-py raises them) to arguments no manager
# should send, so that a sim store cannot accept what Redis refuses, or the reverse.

#: The effects without their field types: some cases send what a field does not declare.
loose: Any = fx
STR = fx.SetNX("str", "v")
ABC = fx.RPush("l", ("a", "b", "c"))
WRONGTYPE = (ResponseError, "WRONGTYPE Operation against a key holding the wrong kind of value")
NOT_FLOAT = (ResponseError, "value is not a valid float")
NOT_HASH_INT = (ResponseError, "hash value is not an integer")
NOT_RANGE_FLOAT = (ResponseError, "min or max is not a float")


def arity(command):
    return (ResponseError, f"wrong number of arguments for '{command}' command")


def data_error(kind):
    return (DataError, f"Invalid input of type: '{kind}'. Convert to a bytes, string, int or float first.")


EDGES = {
    "del-no-keys": ((), fx.Del(()), arity("del")),
    "sadd-no-members": ((), fx.SAdd("s", ()), arity("sadd")),
    "hset-no-fields": ((), fx.HSet("h", {}), arity("hset")),
    "zadd-no-members": ((), fx.ZAdd("z", {}), arity("zadd")),
    "hdel-no-fields": ((), fx.HDel("h", ()), arity("hdel")),
    "rpush-no-values": ((), fx.RPush("l", ()), arity("rpush")),
    "hincrby-float-value": ((fx.HSet("h", {"n": "1.5"}),), fx.HIncrBy("h", "n", 1), NOT_HASH_INT),
    "hincrby-leading-zero": ((fx.HSet("h", {"n": "01"}),), fx.HIncrBy("h", "n", 1), NOT_HASH_INT),
    "hincrby-plus-sign": ((fx.HSet("h", {"n": "+1"}),), fx.HIncrBy("h", "n", 1), NOT_HASH_INT),
    "hincrby-minus-zero": ((fx.HSet("h", {"n": "-0"}),), fx.HIncrBy("h", "n", 1), NOT_HASH_INT),
    "hincrby-space": ((fx.HSet("h", {"n": " 1"}),), fx.HIncrBy("h", "n", 1), NOT_HASH_INT),
    "hincrby-overflow": ((fx.HSet("h", {"n": str(2**63 - 1)}),), fx.HIncrBy("h", "n", 1),
                         (ResponseError, "increment or decrement would overflow")),
    "hincrby-amount-past-64-bits": ((), fx.HIncrBy("h", "n", 2**63),
                                    (ResponseError, "value is not an integer or out of range")),
    "hincrby-wrongtype": ((STR,), fx.HIncrBy("str", "n", 1), WRONGTYPE),
    "zadd-nan": ((), fx.ZAdd("z", {"m": float("nan")}), NOT_FLOAT),
    "zadd-inf": ((), fx.ZAdd("z", {"m": float("inf")}), 1),
    "zadd-text": ((), loose.ZAdd("z", {"m": "abc"}), NOT_FLOAT),
    "zadd-text-inf": ((), loose.ZAdd("z", {"m": "-inf"}), 1),
    "zadd-space": ((), loose.ZAdd("z", {"m": " 1"}), NOT_FLOAT),
    "zadd-overflow": ((), loose.ZAdd("z", {"m": "1e999"}), NOT_FLOAT),
    "zadd-underflow": ((), loose.ZAdd("z", {"m": "1e-400"}), NOT_FLOAT),
    "zincrby-to-nan": ((fx.ZAdd("z", {"m": float("inf")}),), fx.ZIncrBy("z", float("-inf"), "m"),
                       (ResponseError, "resulting score is not a number (NaN)")),
    "zrangebyscore-text-bound": ((), fx.ZRangeByScore("z", "abc", "+inf"), NOT_RANGE_FLOAT),
    "zrangebyscore-nan-bound": ((), fx.ZRangeByScore("z", "nan", "+inf"), NOT_RANGE_FLOAT),
    "zrangebyscore-space-bound": ((fx.ZAdd("z", {"m": 1}),), fx.ZRangeByScore("z", " 1", "+inf"), [("m", 1.0)]),
    "zrangebyscore-empty-bounds": ((fx.ZAdd("z", {"m": 0}),), fx.ZRangeByScore("z", "", ""), [("m", 0.0)]),
    "zrangebyscore-bare-paren": ((fx.ZAdd("z", {"m": 0, "n": 1}),), fx.ZRangeByScore("z", "(", "+inf"), [("n", 1.0)]),
    "zrangebyscore-huge-bounds": ((fx.ZAdd("z", {"m": 1}),), fx.ZRangeByScore("z", "-1e999", "1e999"), [("m", 1.0)]),
    "zrangebyscore-above-inf": ((fx.ZAdd("z", {"m": float("inf")}),), fx.ZRangeByScore("z", "(inf", "+inf"), []),
    "zrangebyscore-count-0": ((fx.ZAdd("z", {"m": 1}),), fx.ZRangeByScore("z", "-inf", "+inf", 0), []),
    "zrangebyscore-count-negative": ((fx.ZAdd("z", {"m": 1, "n": 2}),), fx.ZRangeByScore("z", "-inf", "+inf", -3),
                                     [("m", 1.0), ("n", 2.0)]),
    "zrangebyscore-wrongtype": ((STR,), fx.ZRangeByScore("str", "-inf", "+inf"), WRONGTYPE),
    "zrangebyscore-bound-before-type": ((STR,), fx.ZRangeByScore("str", "x", "+inf"), NOT_RANGE_FLOAT),
    "zrangebyscore-ties-in-byte-order": ((fx.ZAdd("z", {"b": 1, "a": 1, "Z": 1, "é": 1}),),
                                         fx.ZRangeByScore("z", "1", "1"), [("Z", 1.0), ("a", 1.0), ("b", 1.0), ("é", 1.0)]),
    "zcount-text-bound": ((), fx.ZCount("z", "abc", "+inf"), NOT_RANGE_FLOAT),
    "zcount-crossed": ((Z,), fx.ZCount("z", "3", "1"), 0),
    "zrange-past-the-top": ((Z,), fx.ZRange("z", -5, -5), []),
    "zrange-clamped": ((Z,), fx.ZRange("z", -5, 5), [("x", 1.0), ("y", 2.5)]),
    "zrange-crossed": ((Z,), fx.ZRange("z", 1, 0), []),
    "zmscore-wrongtype": ((STR,), fx.ZMScore("str", ("a",)), WRONGTYPE),
    "zmscore-no-members": ((), fx.ZMScore("z", ()), arity("zmscore")),
    "lrange-clamped": ((ABC,), fx.LRange("l", -100, 100), ["a", "b", "c"]),
    "lrange-from-the-end": ((ABC,), fx.LRange("l", -2, -1), ["b", "c"]),
    "lrange-crossed": ((ABC,), fx.LRange("l", 2, 1), []),
    "lrange-past-the-end": ((ABC,), fx.LRange("l", 5, 10), []),
    "get-wrongtype": ((ABC,), fx.Get("l"), WRONGTYPE),
    "setnx-on-another-type": ((ABC,), fx.SetNX("l", "x"), False),
    "spop-wrongtype": ((STR,), fx.SPop("str"), WRONGTYPE),
    "sadd-wrongtype": ((STR,), fx.SAdd("str", ("a",)), WRONGTYPE),
    "zscore-wrongtype": ((STR,), fx.ZScore("str", "a"), WRONGTYPE),
    "del-any-type": ((STR, ABC), fx.Del(("str", "l", "none")), 2),
    "hset-none": ((), loose.HSet("h", {"a": None}), data_error("NoneType")),
    "hset-bool": ((), loose.HSet("h", {"a": True}), data_error("bool")),
    "hset-int-value": ((loose.HSet("h", {"a": 1}),), fx.HGet("h", "a"), "1"),
    "hset-float-value": ((loose.HSet("h", {"a": 1.5}),), fx.HGet("h", "a"), "1.5"),
    "hset-bytes-value": ((loose.HSet("h", {"a": b"x"}),), fx.HGet("h", "a"), "x"),
}


@pytest.mark.parametrize("name", EDGES)
def test_edge_answer(store, name):
    """Odd arguments get Redis's answer: the same value, or the same error and message."""
    setup, command, expected = EDGES[name]
    run_all(store, *setup)
    if isinstance(expected, tuple) and isinstance(expected[0], type):
        with pytest.raises(expected[0]) as caught:
            store.execute(command)
        assert type(caught.value) is expected[0] and str(caught.value) == expected[1]
    else:
        assert shape(store.execute(command)) == shape(expected)


# ---------------------------------------------------------------------------
# Transactions: guards are a compare-and-set.

SPAWNING = (fx.HSet("instance:i-1", {"state": "spawning"}), fx.SAdd("host:h1:instances", ("i-1",)))


def test_transaction_runs_ops_when_every_guard_holds(store):
    """All guards hold: the ops' results come back and their writes are visible."""
    store.execute(fx.HSet("instance:i-1", {"state": "scheduling", "host": "h1"}))
    guards = (Guard("instance:i-1", "state", "scheduling"), Guard("instance:i-1", "host", "h1"))
    assert store.transaction(Transaction(ops=SPAWNING, guards=guards)) == [0, 1]
    assert store.dump() == {"instance:i-1": {"state": "spawning", "host": "h1"}, "host:h1:instances": {"i-1"}}


def test_transaction_writes_nothing_when_one_guard_fails(store):
    """One failing guard among several: None, and the store is unchanged."""
    store.execute(fx.HSet("instance:i-1", {"state": "running", "host": "h1"}))
    before = store.dump()
    guards = (Guard("instance:i-1", "host", "h1"), Guard("instance:i-1", "state", "scheduling"))
    assert store.transaction(Transaction(ops=SPAWNING, guards=guards)) is None
    assert store.dump() == before


def test_guard_expecting_absent_field_holds_when_absent(store):
    """expected=None holds on a missing field of a missing or existing hash."""
    store.execute(fx.HSet("h", {"other": "x"}))
    guards = (Guard("h", "lock", None), Guard("nothing", "lock", None))
    assert store.transaction(Transaction(ops=(fx.HSet("h", {"lock": "me"}),), guards=guards)) == [1]


def test_guard_expecting_absent_field_fails_when_present(store):
    """expected=None fails when the field exists, even if it is empty."""
    store.execute(fx.HSet("h", {"lock": ""}))
    assert store.transaction(Transaction(ops=(fx.HSet("h", {"lock": "me"}),), guards=(Guard("h", "lock", None),))) is None
    assert store.execute(fx.HGet("h", "lock")) == ""


def test_transaction_without_guards_or_ops(store):
    """No guards: the ops just run; no ops either: an empty list."""
    assert store.transaction(Transaction(ops=(fx.RPush("l", ("a",)), fx.LRange("l")))) == [1, ["a"]]
    assert store.transaction(Transaction(ops=())) == []


def test_failing_op_keeps_the_writes_before_it(store):
    """An op that fails raises ResponseError; the ops before it stay written (no rollback)."""
    store.execute(fx.SetNX("k", "v"))
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        store.transaction(Transaction(ops=(fx.SAdd("s", ("a",)), fx.HSet("k", {"f": "1"}), fx.SAdd("t", ("b",)))))
    assert store.dump() == {"k": "v", "s": {"a"}}


def test_transaction_with_many_arguments(store):
    """Ops with tens of thousands of arguments run in a transaction and report one result each."""
    members = tuple(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(20_001))
    keys = tuple(f"k{i}" for i in range(9_000))
    run_all(store, *(fx.SetNX(k, "v") for k in keys[:10]))
    ops = (fx.SAdd("pool", members), fx.RPush("l", members), fx.HSet("h", dict.fromkeys(members, "1")), fx.Del(keys))
    assert store.transaction(Transaction(ops=ops)) == [20_001, 20_001, 20_001, 10]
    assert store.execute(fx.SCard("pool")) == 20_001 and store.execute(fx.LRange("l", -1, -1)) == [members[-1]]


def test_commands_are_counted_alike(store):
    """``commands`` counts one per command and per guard checked, alike on every store."""
    store.execute(fx.HSet("h", {"a": "1"}))
    store.transaction(Transaction(ops=(fx.Get("x"),), guards=(Guard("h", "a", "2"), Guard("h", "b", None))))
    store.transaction(Transaction(ops=(fx.Get("x"), fx.Get("y")), guards=(Guard("h", "a", "1"),)))
    store.scard("h-set")
    assert store.commands == 1 + 1 + 3


# ---------------------------------------------------------------------------
# Batches: several commands in one round trip.


def test_batch_gives_each_ops_result_as_execute_does(store):
    """A batch's results are its ops' execute() results, in order, of the same types."""
    ops = (fx.ZAdd("z", {"x": 1, "y": 2.5}), fx.ZMScore("z", ("x", "none")), fx.HGet("h", "f"), fx.ZRange("z", -1, -1),
           fx.ZCount("z", "(1", "+inf"), fx.ZRangeByScore("z", "-inf", "+inf", 1))
    assert shape(store.batch(fx.Batch(ops))) == shape([2, [1.0, None], None, [("y", 2.5)], 1, [("x", 1.0)]])


def test_batch_runs_every_op_then_raises_the_first_refusal(store):
    """An op the store refuses does not stop the ops after it; its ResponseError comes after them."""
    store.execute(fx.SetNX("k", "v"))
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        store.batch(fx.Batch((fx.SAdd("s", ("a",)), fx.HSet("k", {"f": "1"}), fx.SAdd("t", ("b",)))))
    assert store.dump() == {"k": "v", "s": {"a"}, "t": {"b"}}


def test_batch_counts_one_command_per_op(store):
    """``commands`` counts a batch's ops as the commands they are."""
    store.batch(fx.Batch((fx.Get("a"), fx.Get("b"), fx.SCard("c"))))
    assert store.commands == 3


# ---------------------------------------------------------------------------
# dump() and isolation.


def test_dump_shapes(store):
    """dump(): string -> str, hash -> dict, set -> set, list -> list, zset -> dict of float."""
    run_all(store, fx.SetNX("s", "v"), fx.HSet("h", {"f": "1"}), fx.SAdd("set", ("a",)), fx.RPush("l", ("a", "b")), fx.ZAdd("z", {"m": 2}))
    dump = store.dump()
    assert dump == {"s": "v", "h": {"f": "1"}, "set": {"a"}, "l": ["a", "b"], "z": {"m": 2.0}}
    assert shape(dump["z"]) == shape({"m": 2.0})


def test_dump_of_an_empty_store(store):
    """A new store dumps as {}."""
    assert store.dump() == {}


def test_stores_are_isolated(new_store):
    """Two stores never see each other's keys (on Redis: two prefixes, one database)."""
    a, b = new_store(), new_store()
    a.execute(fx.SAdd("pool", ("10.0.0.2",)))
    b.execute(fx.SAdd("pool", ("10.0.0.9",)))
    assert a.dump() == {"pool": {"10.0.0.2"}} and b.dump() == {"pool": {"10.0.0.9"}}


def test_real_flush_deletes_only_its_own_keys(new_real_store):
    """flush() empties one prefix and leaves another store's keys alone."""
    a, b = new_real_store(), new_real_store()
    run_all(a, *(fx.SetNX(f"k{i}", "v") for i in range(1200)))
    b.execute(fx.SetNX("k0", "mine"))
    assert a.flush() == 1200 and a.dump() == {} and b.dump() == {"k0": "mine"}


def test_real_every_key_argument_is_prefixed(real_store):
    """Commands, DEL's keys and guard keys all address prefixed keys, and only those."""
    raw = real_store.client
    raw_key = f"novalab-test-{uuid4().hex}"  # the same name without the prefix
    real_store.execute(fx.HSet(raw_key, {"state": "mine"}))
    raw.hset(raw_key, "state", "not mine")
    try:
        assert real_store.transaction(Transaction(ops=(), guards=(Guard(raw_key, "state", "mine"),))) == []
        assert real_store.execute(fx.Del((raw_key, "other"))) == 1
        assert raw.hget(raw_key, "state") == "not mine" and raw.keys(real_store.prefix + "*") == []
    finally:
        raw.delete(raw_key)


def test_real_transaction_survives_script_flush(real_store):
    """After SCRIPT FLUSH (NOSCRIPT) the transaction is sent in full and still runs once."""
    real_store.client.script_flush()
    assert real_store.transaction(Transaction(ops=(fx.HIncrBy("h", "n", 1),))) == [1]
    assert real_store.transaction(Transaction(ops=(fx.HIncrBy("h", "n", 1),))) == [2]


def test_real_ping(real_store):
    """ping() is True on a live Redis."""
    assert real_store.ping() is True


# ---------------------------------------------------------------------------
# Failure: no Redis needed.

CALLS = {
    "ping": lambda s: s.ping(),
    "execute": lambda s: s.execute(fx.SPop("pool")),
    "transaction": lambda s: s.transaction(Transaction(ops=(fx.SPop("pool"),), guards=(Guard("h", "f", None),))),
    "dump": lambda s: s.dump(),
    "flush": lambda s: s.flush(),
    "scard": lambda s: s.scard("pool"),
}


@pytest.mark.parametrize("call", CALLS)
def test_real_closed_port_raises_store_unavailable(call):
    """Every call on a RedisStore whose port is closed raises StoreUnavailable naming the URL."""
    store = RedisStore("redis://127.0.0.1:1/0", socket_timeout=1.0)
    with pytest.raises(StoreUnavailable, match=re.escape("127.0.0.1:1")):
        CALLS[call](store)


def test_real_silent_server_is_reported_not_retried():
    """A server that accepts but never answers: StoreUnavailable after one connection."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    accepted = []
    try:
        store = RedisStore(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", socket_timeout=0.2)
        with pytest.raises(StoreUnavailable):
            store.execute(fx.SPop("pool"))
        listener.setblocking(False)
        while True:
            try:
                accepted.append(listener.accept()[0])
            except BlockingIOError:
                break
        assert len(accepted) == 1
    finally:
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:6379", "redis://127.0.0.1:port/0", "redis://127.0.0.1/zero", "redis:///0", "redis://h/0?protocol=3"],
)
def test_real_bad_url_raises_value_error(url):
    """A malformed URL is refused at construction with a message that quotes it."""
    with pytest.raises(ValueError, match="invalid Redis URL"):
        RedisStore(url)


def test_real_bad_url_message_hides_the_password():
    """The password of a bad URL does not appear in the error."""
    with pytest.raises(ValueError) as caught:
        RedisStore("redis://user:s3cret@127.0.0.1:port/0")
    assert "s3cret" not in str(caught.value) and "user:***@" in str(caught.value)


def test_real_empty_prefix_is_refused():
    """An empty prefix would make flush() delete the whole database."""
    with pytest.raises(ValueError, match="prefix"):
        RedisStore(prefix="")
