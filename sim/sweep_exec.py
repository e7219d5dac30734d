"""Where a sweep's runs execute: local processes, or the workers of a Dask distributed cluster.

A task is self-contained (the scenario's bytes, and its calibration file's, travel with it),
so a worker needs novalab at the same commit but not the scenario's folder. Both backends
yield ``(plan entry, future)`` as runs finish and keep at most a bounded number of runs
submitted at a time, so a 10,000-run sweep holds a handful of futures, never 10,000.

Run directories are always written into the sweep directory on the machine that runs
``run-scenario``: a local process writes its own, a cluster worker returns the files
(``report.run_files``, the one writer of a run directory) and the client saves them. So a
remote cluster needs no filesystem shared with the client, and both ways give the same files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from common.scenario import ScenarioError, parse_yaml, with_overrides
from sim import output
from sim.one_run import run_files
from sim.overrides import SweepError
from sim.run import simulate

#: Runs submitted but not finished, per parallel slot: enough that a slot never waits for
#: the next submission, few enough that pending work (and its results) stays small.
IN_FLIGHT_PER_SLOT = 2
#: Seconds to reach a cluster's scheduler (connect and handshake) before giving up.
CONNECT_TIMEOUT = 10.0


def execute(task: dict) -> tuple[dict, dict[str, bytes] | None]:
    """One run of a sweep, in a worker: -> (its summary, its run directory's files). With
    ``task["out"]`` the files are saved there instead and None comes back."""
    beside = task["beside"]

    def read_beside(name: str) -> bytes:
        if name not in beside:
            raise ScenarioError(task["scenario_path"], [f"calibration: {name!r} was not read beside the scenario"])
        return beside[name]

    scenario = parse_yaml(task["raw"], task["scenario_path"], read_beside=read_beside)
    if task["overrides"]:
        scenario = with_overrides(scenario, task["overrides"], task["scenario_path"])
    with own_random(task["seed"]):
        result = simulate(scenario, task["seed"])
    summary, files = run_files(
        result, scenario, task["raw"], task["scenario_path"], task["seed"], plots=task["plots"], stamp=task["stamp"],
        overrides=task["overrides"], sweep=task["sweep"], read_beside=read_beside)
    if task["out"] is None:
        return summary, files
    save_run_dir(Path(task["out"]), files)
    return summary, None


class _ThreadRandom:
    """Stands in for the ``random`` module inside fakeredis, whose SPOP (and a few other
    commands) draw from Python's global stream, which a run seeds. In a process with other
    threads (a Dask worker: its event loop, heartbeats, ...) they draw from that stream
    too, and a run would differ from the same run alone. A thread inside ``own_random``
    draws from a stream of its own, seeded as the run seeds the global one (the same
    draws, so the same fingerprint); every other thread from the global stream, as before."""

    def __init__(self):
        self.local = threading.local()

    def __getattr__(self, name):
        own = getattr(self.local, "rng", None)
        return getattr(random if own is None else own, name)


_THREAD_RANDOM = _ThreadRandom()


@contextlib.contextmanager
def own_random(seed: int):
    """Within: fakeredis, in this thread, draws from ``random.Random(seed)``."""
    for name, module in list(sys.modules.items()):
        if name.startswith("fakeredis") and getattr(module, "random", None) is random:
            module.random = _THREAD_RANDOM  # type: ignore[attr-defined]
    _THREAD_RANDOM.local.rng = random.Random(seed)
    try:
        yield
    finally:
        _THREAD_RANDOM.local.rng = None


def save_run_dir(out: Path, files: dict[str, bytes]) -> None:
    """Save a run directory whole or not at all: written beside it as ``.<name>.partial``
    and renamed into place (replacing an older one of the same name), so a sweep stopped
    mid-write never leaves a run directory that looks finished."""
    partial = out.with_name(f".{out.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    output.save_run_dir(partial, files)
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)


def remove_partials(sweep_dir: Path) -> None:
    """Remove what runs stopped mid-write left (``.<name>.partial`` directories)."""
    for partial in sweep_dir.glob(".*.partial"):
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)


# -- local processes ---------------------------------------------------------------------


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: a worker ends at once, without a traceback,
    # and the parent reports the interruption. A parent that ignores SIGINT (started in
    # the background) has workers that ignore it too.
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.SIG_DFL)


def local_results(tasks: Iterator[tuple[dict, dict]], workers: int) -> Iterator[tuple[dict, Future]]:
    """Run ``(entry, task)`` pairs on ``workers`` processes; yields ``(entry, future)`` as
    each finishes. Closing the iterator early (an exception, Ctrl-C) cancels what has not
    started and stops the processes."""
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init)
    in_flight: dict[Future, dict] = {}
    try:
        while True:
            while len(in_flight) < IN_FLIGHT_PER_SLOT * workers:
                item = next(tasks, None)
                if item is None:
                    break
                in_flight[_submit(pool, item[1])] = item[0]
            if not in_flight:
                return
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                yield in_flight.pop(future), future
    finally:
        if in_flight:  # stopped early: nothing more starts, and what runs is stopped
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _submit(pool: ProcessPoolExecutor, task: dict) -> Future:
    try:
        return pool.submit(execute, task)
    except BrokenProcessPool as e:  # a worker died (killed, out of memory): the runs left fail, each in its row
        failed: Future = Future()
        failed.set_exception(e)
        return failed


# -- a Dask distributed cluster ------------------------------------------------------------


def connect(address: str):
    """A ``distributed.Client`` of the scheduler at ``address``; SweepError, naming the
    address and what was wrong, when it cannot be reached in CONNECT_TIMEOUT seconds."""
    try:
        import distributed
        from distributed.comm import connect as comm_connect
    except ImportError:
        raise SweepError("--cluster needs Dask distributed: pip install 'novalab[cluster]'") from None

    async def handshake():
        comm = await comm_connect(address, timeout=CONNECT_TIMEOUT)
        await comm.close()

    # Reached first with a bounded handshake: a Client left half-made by a bad address
    # prints tracebacks as it is collected, and a port that answers but is not a Dask
    # scheduler would hold it past its own timeout.
    try:
        asyncio.run(asyncio.wait_for(handshake(), CONNECT_TIMEOUT + 1))
        return distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, ValueError, TypeError) as e:  # asyncio's TimeoutError is an OSError
        reason = str(e) or f"no Dask scheduler answered within {CONNECT_TIMEOUT:g} s"
        raise SweepError(f"--cluster {address}: cannot reach a Dask scheduler: {reason}") from None


def cluster_slots(client) -> int:
    """Parallel runs the cluster has now: its workers' threads (at least 1)."""
    return max(1, sum(client.nthreads().values()))


def cluster_results(client, tasks: Iterator[tuple[dict, dict]], jobs: int | None) -> Iterator[tuple[dict, Future]]:
    """Run ``(entry, task)`` pairs on the cluster's workers; yields ``(entry, future)`` as
    each finishes. At most ``jobs`` runs (default: twice the cluster's threads, read again
    as runs finish, so workers that join are used) are submitted at a time. Closing the
    iterator early cancels the runs still submitted."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]  # keys unique on a scheduler that other sweeps share
    finished = as_completed(loop=client.loop)  # this client, not a default one
    in_flight: dict[str, tuple[dict, Future]] = {}

    def fill():
        limit = jobs or IN_FLIGHT_PER_SLOT * cluster_slots(client)
        while len(in_flight) < limit:
            item = next(tasks, None)
            if item is None:
                return
            entry, task = item
            future = client.submit(execute, task, key=f"novalab-{token}-{entry['name']}", pure=False, retries=0)
            in_flight[future.key] = (entry, future)
            finished.add(future)

    try:
        fill()
        for future in finished:
            entry, _ = in_flight.pop(future.key)
            yield entry, future
            fill()
    finally:
        if in_flight:
            finished.clear()
            client.cancel([future for _, future in in_flight.values()])
