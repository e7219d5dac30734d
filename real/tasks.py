"""``Fork`` and ``Join`` in real mode: a forked generator runs in a thread of a bounded
pool, driven by the forking agent; joining waits for every one of them.

Why a thread per task: a task sleeps most of its life (an instance's lifetime) between
blocking requests, and the real runner blocks. ``MAX_TASKS`` bounds the threads; a fork
past it waits for a free thread, which delays that launch (a run that needs more tasks
at once than this is larger than one machine should drive).
"""

from __future__ import annotations

import concurrent.futures
from concurrent.futures import ThreadPoolExecutor

from common.workload import Fork, Join

#: Tasks running at once: each is a thread, mostly asleep.
MAX_TASKS = 2048


def install(runtime, max_tasks: int = MAX_TASKS) -> ThreadPoolExecutor:
    """Register Fork and Join with ``runtime`` (a RealRuntime); returns the pool, which
    the caller shuts down once the work has been joined."""
    pool = ThreadPoolExecutor(max_workers=max_tasks, thread_name_prefix="task")

    def fork(agent, effect: Fork):
        return pool.submit(runtime.drive, agent, effect.work)

    def join(agent, effect: Join):
        done, _ = concurrent.futures.wait(effect.handles)
        for future in done:
            future.result()  # a task's unexpected error surfaces here, not silently

    runtime.register(Fork, fork)
    runtime.register(Join, join)
    return pool
