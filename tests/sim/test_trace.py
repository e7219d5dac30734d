"""The trace fingerprint (sim/trace.py): every effect's kind, arguments, time and agent
count, whichever text an effect gets (flat, repr or constant)."""

import pytest

from common import effects as fx
from sim.trace import Trace

TX = fx.Transaction(
    ops=(fx.HSet("i", {"state": "running", "at": "1.5"}), fx.RPush("t", ("a>b",)), fx.ZRem("building", ("i",))),
    guards=(fx.Guard("i", "state", "building"), fx.Guard("i", "host", None)),
)

#: Pairs of effects that differ in one argument (or only in how it splits into parts).
DIFFERENT = [
    (fx.ZAdd("z", {"a": 1.0}), fx.ZAdd("z", {"a": 2.0})),
    (fx.ZAdd("z", {"a": 1.0}), fx.ZAdd("z", {"a": 1})),
    (fx.ZAdd("z", {"a\x1fb": 1.0}), fx.ZAdd("z\x1fa", {"b": 1.0})),
    (fx.ZAdd("z", {"a": 1.0, "b": 2.0}), fx.ZAdd("z", {"b": 1.0, "a": 2.0})),
    (TX, fx.Transaction(ops=TX.ops, guards=(fx.Guard("i", "state", "building"), fx.Guard("i", "host", "None")))),
    (TX, fx.Transaction(ops=TX.ops, guards=(fx.Guard("i", "state", "building"), fx.Guard("i", "host", "")))),
    (fx.Transaction(ops=(fx.HSet("k", {"a": "b", "c": "d"}),)), fx.Transaction(ops=(fx.HSet("k", {"a": "c", "b": "d"}),))),
    (fx.Transaction(ops=(fx.SAdd("k", ("a\x1fb",)),)), fx.Transaction(ops=(fx.SAdd("k", ("a", "b")),))),
    (fx.Transaction(ops=(fx.SAdd("k", ("a\x1eb",)),)), fx.Transaction(ops=(fx.SAdd("k", ("a",)), fx.SAdd("b", ())))),
    (fx.Transaction(ops=(fx.RPush("k", ("1",)),)), fx.Transaction(ops=(fx.RPush("k", (1,)),))),  # type: ignore[arg-type]
    (fx.Transaction(ops=(fx.HIncrBy("k", "f", 1),)), fx.Transaction(ops=(fx.HIncrBy("k", "f", 2),))),
    (fx.Now(), fx.NewId("i")),
    (fx.Batch((fx.ZAdd("z", {"h": 1.0}), fx.HGet("p", "h"))), fx.Batch((fx.ZAdd("z", {"h": 2.0}), fx.HGet("p", "h")))),
    (fx.Batch((fx.ZAdd("z", {"h": 1.0}),)), fx.Batch((fx.ZAdd("z", {"h": 1}),))),
    (fx.Batch((fx.ZAdd("z", {"h": 1.0}),)), fx.Transaction(ops=(fx.ZAdd("z", {"h": 1.0}),))),
    (fx.Batch((fx.ZAdd("z", {"a": 1.0, "b": 2.0}),)), fx.Batch((fx.ZAdd("z", {"a": 1.0}), fx.ZAdd("b", {})))),
    (fx.Batch((fx.HGet("p", "h"),)), fx.Batch((fx.HGet("p", "g"),))),
    (fx.Batch((fx.HGet("p", "h"),)), fx.Batch((fx.ZScore("p", "h"),))),
    (fx.Batch((fx.SCard("p"),)), fx.Batch((fx.SMembers("p"),))),
    (fx.Transaction(ops=(fx.SetNX("k", "v"),)), fx.Transaction(ops=(fx.SetNX("k", "w"),))),
]


def fingerprint(*entries) -> str:
    """Entries: (time, agent, effect), added as ``drive`` adds them."""
    trace = Trace()
    for now, agent, effect in entries:
        trace.stamps.append(now)
        trace.lines += (agent, trace.describer(type(effect))(effect))
    return trace.fingerprint


@pytest.mark.parametrize(("first", "second"), DIFFERENT)
def test_effects_that_differ_give_different_fingerprints(first, second):
    assert fingerprint((0.0, "a", first)) != fingerprint((0.0, "a", second))


def test_the_time_the_agent_and_the_order_count():
    base = fingerprint((1.0, "a", TX), (2.0, "b", fx.Now()))
    assert base == fingerprint((1.0, "a", TX), (2.0, "b", fx.Now()))
    assert base != fingerprint((1.0, "a", TX), (2.5, "b", fx.Now()))
    assert base != fingerprint((1.0, "a", TX), (2.0, "c", fx.Now()))
    assert base != fingerprint((2.0, "b", fx.Now()), (1.0, "a", TX))


def test_a_newline_in_an_argument_keeps_each_effect_on_its_own_lines():
    assert fingerprint((0.0, "a", fx.ZAdd("z\nb", {"c": 1.0}))) != fingerprint((0.0, "a", fx.ZAdd("z", {"c": 1.0})))
    text = Trace().describer(fx.Transaction)(fx.Transaction(ops=(fx.SAdd("k", ("a\nb",)),)))
    assert "\n" not in text


def test_folding_in_batches_gives_the_fingerprint_of_one_batch():
    trace = Trace()
    entries = [(float(i), "a", fx.ZAdd("z", {"m": float(i)})) for i in range(10)]
    for i, (now, agent, effect) in enumerate(entries):
        trace.stamps.append(now)
        trace.lines += (agent, trace.describer(type(effect))(effect))
        if i % 3 == 0:
            trace.fold()
    assert trace.fingerprint == fingerprint(*entries) and trace.effects == 10
