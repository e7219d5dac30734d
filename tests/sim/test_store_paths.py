"""The sim stores agree command by command: SimStore's direct path into fakeredis answers
exactly as redis-py's public client path, and MemoryStore exactly as fakeredis (SPOP
included, under one seed)."""

import random
from types import SimpleNamespace

import pytest
from redis.exceptions import ResponseError

from common import effects as fx
from sim.memstore import MemoryStore
from sim.store import SimStore

KEYS = ("h", "s", "z", "l", "str")


def random_command(rng):
    key, member, field = rng.choice(KEYS), rng.choice("abcde"), rng.choice("xyz")
    return rng.choice([
        lambda: fx.Get(key), lambda: fx.SetNX(key, member), lambda: fx.Del((key, rng.choice(KEYS))),
        lambda: fx.HSet(key, {field: member}), lambda: fx.HGet(key, field), lambda: fx.HGetAll(key),
        lambda: fx.HDel(key, (field,)), lambda: fx.HIncrBy(key, field, rng.randint(-3, 3)),
        lambda: fx.SAdd(key, (member, rng.choice("abcde"))), lambda: fx.SRem(key, (member,)), lambda: fx.SCard(key),
        lambda: fx.SMembers(key), lambda: fx.SPop(key),
        lambda: fx.ZAdd(key, {member: rng.choice([0, 1.5, 7])}), lambda: fx.ZIncrBy(key, rng.choice([1, 0.25]), member),
        lambda: fx.ZScore(key, member), lambda: fx.ZRem(key, (member,)),
        lambda: fx.ZRangeByScore(key, "-inf", "+inf", rng.choice([None, 2])),
        lambda: fx.RPush(key, (member,)), lambda: fx.LRange(key),
    ])()


def outcome(store, command):
    try:
        return ("ok", store.execute(command))
    except ResponseError as e:
        return ("error", str(e))


@pytest.mark.parametrize("seed", range(20))
def test_both_paths_agree_on_random_command_sequences(seed):
    """Every store command, wrong types included, gives the same value (and type) or the same error on both paths."""
    direct, public = SimStore(direct=True), SimStore(direct=False)
    assert direct.direct is not None and public.direct is None
    rng = random.Random(seed)
    for _ in range(300):
        command = random_command(rng)
        state = random.getstate()  # SPOP draws from the global stream: give both the same draw
        first = outcome(direct, command)
        random.setstate(state)
        second = outcome(public, command)
        assert (first, type(first[1])) == (second, type(second[1])), command
    assert direct.dump() == public.dump()


@pytest.mark.parametrize("seed", range(20))
def test_memory_store_agrees_with_fakeredis_on_random_command_sequences(seed):
    """Every store command, wrong types and SPOP included, gives what fakeredis gives."""
    fake, memory = SimStore(), MemoryStore(seed)
    random.seed(seed)  # fakeredis's SPOP draws from the global stream, MemoryStore from its own
    rng = random.Random(1000 + seed)
    for _ in range(300):
        command = random_command(rng)
        first, second = outcome(fake, command), outcome(memory, command)
        assert (first, type(first[1])) == (second, type(second[1])), command
    assert fake.dump() == memory.dump()


def test_memory_store_spop_is_a_function_of_the_seed():
    """Two stores with one seed pop a pool in the same order; another seed, another order."""

    def drained(seed):
        store = MemoryStore(seed)
        store.execute(fx.SAdd("pool", tuple(f"10.0.0.{i}" for i in range(50))))
        return [store.execute(fx.SPop("pool")) for _ in range(50)]

    assert drained(3) == drained(3) != drained(4)


@pytest.mark.parametrize("store", [SimStore, lambda: MemoryStore(1)], ids=["fakeredis", "memory"])
def test_batch_runs_every_op_and_raises_the_first_refusal_after(store):
    """A batch runs its ops in order, counts each, and raises an op's refusal once all ran (as EXEC)."""
    s = store()
    s.execute(fx.SetNX("k", "v"))
    assert s.batch(SimpleNamespace(ops=(fx.ZIncrBy("cores", 2, "h1"), fx.SCard("pool")))) == [2.0, 0]
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        s.batch(SimpleNamespace(ops=(fx.SAdd("s", ("a",)), fx.HSet("k", {"f": "1"}), fx.SAdd("t", ("b",)))))
    assert s.dump() == {"k": "v", "cores": {"h1": 2.0}, "s": {"a"}, "t": {"b"}} and s.commands == 6
