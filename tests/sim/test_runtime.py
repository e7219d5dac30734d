"""The sim runner's own contract: effects, errors thrown in, forgotten yield from."""

from harness import run_all, runtime

from common.effects import Choose, Get, NewId, Now, SetNX, Sleep
from common.errors import UseYieldFrom


def test_store_effects_return_redis_results():
    """A store effect's result is what Redis answers."""

    def work():
        first = yield SetNX("k", "v")
        second = yield SetNX("k", "w")
        value = yield Get("k")
        return first, second, value

    assert run_all(runtime(1), "t", [work()]) == [(True, False, "v")]


def test_sleep_advances_virtual_time():
    """Sleep moves Now forward by exactly its seconds."""

    def work():
        before = yield Now()
        yield Sleep(42.0)
        after = yield Now()
        return after - before

    assert run_all(runtime(1), "t", [work()]) == [42.0]


def test_yielding_a_generator_throws_use_yield_from():
    """A forgotten 'yield from' is an error thrown into the manager, not a silent no-op."""

    def helper():
        yield Now()

    def work():
        try:
            yield helper()
        except UseYieldFrom as e:
            return str(e)

    (message,) = run_all(runtime(1), "t", [work()])
    assert "yield from" in message


def test_empty_choose_raises_value_error():
    """Choose over nothing raises ValueError into the manager."""

    def work():
        try:
            yield Choose(())
        except ValueError:
            return "raised"

    assert run_all(runtime(1), "t", [work()]) == ["raised"]


def test_new_ids_are_unique_and_reproducible():
    """NewId never repeats within a run and repeats across runs with one seed."""

    def work():
        ids = []
        for _ in range(500):
            ids.append((yield NewId("i")))
        return ids

    (first,) = run_all(runtime(3), "t", [work()])
    (again,) = run_all(runtime(3), "t", [work()])
    assert len(set(first)) == 500 and first == again
    assert all(i.startswith("i-") and len(i) == 10 for i in first)
