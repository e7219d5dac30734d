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


def odd_command(rng):
    """A command of a kind ``sim.memstore_fast`` reads directly, with arguments it reads
    itself or must hand to ``execute`` (ints, bytes, None, NaN, nothing to write)."""
    key = rng.choice((*KEYS, b"h", 7))
    text = rng.choice(("a", "b", "c", "d"))
    odd = rng.choice((text, text, text, 3, 2.5, b"e", None, True))
    score = rng.choice((1.0, 2.5, -0.0, float("inf"), float("nan"), 4, "5", None))
    members = rng.choice(((text,), (text, "b"), (), (odd,), (text, odd)))
    return rng.choice([
        lambda: fx.ZAdd(key, {text: score, **({odd: 1.0} if rng.random() < 0.3 else {})}), lambda: fx.ZAdd(key, {}),
        lambda: fx.HSet(key, {text: odd}), lambda: fx.HSet(key, {odd: text, "f": "g"}), lambda: fx.HSet(key, {}),
        lambda: fx.HGetAll(key), lambda: fx.HGet(key, odd), lambda: fx.RPush(key, members), lambda: fx.SAdd(key, members),
        lambda: fx.SRem(key, members), lambda: fx.ZRem(key, members), lambda: fx.SetNX(key, text),
        lambda: fx.HIncrBy(key, rng.choice((text, odd)), rng.choice((1, -2, 2**63, True, 1.5, "3"))),
        lambda: fx.HSet(key, {text: rng.choice(("9223372036854775807", "07", "x", "-4"))}),
        lambda: fx.ZIncrBy(key, score if rng.random() < 0.5 else rng.choice((1, -3, 2**60, True)), rng.choice((text, odd))),
    ])()


def odd_outcome(run, command):
    try:
        return ("ok", run(command))
    except Exception as e:  # ResponseError, DataError: the same class and text on both paths
        return (type(e).__name__, str(e))


@pytest.mark.parametrize("seed", range(20))
def test_memory_store_fast_commands_answer_as_execute(seed):
    """The commands MemoryStore reads straight from their effects give what ``execute``
    gives: value and type, error, store contents and command count; during an outage too."""
    fast, slow = MemoryStore(seed), MemoryStore(seed)
    rng = random.Random(seed)
    for i in range(400):
        command = odd_command(rng)
        fast.down = slow.down = i % 97 == 96
        first, second = odd_outcome(fast.executor(type(command)), command), odd_outcome(slow.execute, command)
        assert (first, type(first[1])) == (second, type(second[1])), command
    assert fast.dump() == slow.dump() and fast.commands == slow.commands
    assert all(fast.executor(kind) != fast.execute for kind in (fx.ZAdd, fx.HSet, fx.HIncrBy, fx.ZIncrBy))


def test_transactions_take_the_fast_path_with_the_same_outcome():
    """A transaction's ops run through the store's executors: the same results as one by one."""
    fast, slow = MemoryStore(1), MemoryStore(1)
    ops = (fx.HSet("i", {"state": "running"}), fx.RPush("t", ("a",)), fx.ZAdd("z", {"h": 1.5}), fx.SAdd("s", ("x",)))
    assert fast.transaction(fx.Transaction(ops, (fx.Guard("i", "state", None),))) == [slow.execute(op) for op in ops]
    assert fast.transaction(fx.Transaction(ops, (fx.Guard("i", "state", None),))) is None
    assert fast.dump() == slow.dump()
