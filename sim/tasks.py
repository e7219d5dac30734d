"""``Fork`` and ``Join`` in the sim: a forked generator is a SimPy process of its own,
driven by the agent that forked it; joining waits for all of them."""

from __future__ import annotations

from common.workload import Fork, Join


def install(runtime) -> None:
    def fork(agent, effect: Fork):
        return runtime.start(agent, effect.work)
        yield  # a generator, like every performer

    def join(agent, effect: Join):
        if effect.handles:
            yield runtime.env.all_of(list(effect.handles))

    runtime.register(Fork, fork)
    runtime.register(Join, join)
