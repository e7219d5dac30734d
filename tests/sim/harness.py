"""A bare sim runtime for driving a few generators concurrently (no cloud around them)."""

import simpy

from common.scenario import Timing
from sim.recorder import Recorder
from sim.runtime import SimRuntime, stream
from sim.store import SimStore


def runtime(seed: int, store_latency=(0.0001, 0.002)):
    env = simpy.Environment()
    timing = Timing.model_validate({"store": {"uniform": list(store_latency)}, "inline_zero_latency": False})
    return SimRuntime(env, seed, SimStore(), None, timing, Recorder())


def run_all(rt, agent_name: str, generators, start_jitter: float = 0.001):
    """Start every generator at a seeded small offset and run to completion; returns
    the results (exceptions included) in order."""
    rng = stream(rt.seed, "harness/jitter")
    results = [None] * len(generators)

    def one(index, gen, delay):
        yield rt.env.timeout(delay)
        try:
            results[index] = yield from rt.drive(rt.agent(f"{agent_name}{index}"), gen)
        except Exception as e:  # the test inspects it
            results[index] = e

    for index, gen in enumerate(generators):
        rt.env.process(one(index, gen, rng.uniform(0, start_jitter)))
    rt.env.run()
    return results
