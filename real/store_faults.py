"""The fault plan's store faults in real mode, played on a Redis the run starts for itself.

A run whose plan has a store fault (``store_wipe``, ``store_outage``, ``store_stall``) never touches the
Redis of ``real.redis_url``: it starts a private ``redis-server`` (real.private_redis) in
``<run>/redis`` on a free port, points the daemons and itself at it, and stops it at the
end. A ``real.redis_url`` other than the default is someone's own Redis, which a run must
not wipe or stop: such a plan is refused before anything starts. Without store faults a
run uses ``real.redis_url`` as before.

- ``store_wipe``: FLUSHALL on the private Redis (as Redis restarted without persistence).
- ``store_outage``: the private Redis shuts down saving its data and starts again from it
  ``store_outage`` seconds later: unreachable meanwhile (connections refused, no command
  runs late), its data intact after (real.private_redis says why not SIGSTOP).
- ``store_stall``: the private Redis is stopped (SIGSTOP) and continued (SIGCONT)
  ``store_stall`` seconds later: it accepts connections and answers nothing meanwhile,
  then runs every command it was sent, whether or not its client still waits (the
  daemons' client timeout is their ``connect_timeout``, 5 s by default): ambiguous
  outcomes, as ``sim.store_stall`` models them. A stall from a store command
  (``after_effects``) is sim-only: the run does not count the store's commands.

The daemons re-assert their own start-up state after a wipe (common.recovery); the run
registered the default images at set-up, so a thread of the run keeps them
(``keep_images``), as the sim's API does.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from common import recovery
from common.scenario import Real
from real.outage import Outage
from real.private_redis import PrivateRedis, PrivateRedisError
from real.runner import Agent
from real.startup import StartupError

log = logging.getLogger(__name__)

#: Fault kinds played on the store.
KINDS = ("store_wipe", "store_outage", "store_stall")


def planned(scenario) -> bool:
    """Whether the scenario's fault plan has a store fault."""
    return any(getattr(fault, kind) is not None for fault in scenario.faults for kind in KINDS)


def problems(scenario, config) -> list[str]:
    """Why the plan's store faults cannot be played with the run's ``config`` (its
    ``redis_url`` from real.redis_url or ``--config``), if they cannot."""
    url, default = config.redis_url, Real.model_fields["redis_url"].default
    if not planned(scenario):
        return []
    if config.production:
        return [f"store faults ({', '.join(KINDS)}) need a Redis the run starts for itself; a production run uses "
                "the site's"]
    if url != default:
        return [f"store faults ({', '.join(KINDS)}) are played on a Redis the run starts for itself, and "
                f"redis_url names one of yours ({url}; real.redis_url or --config): drop it, or the store faults"]
    return []


def start(scenario, out: Path, config):
    """-> (the run's own Redis, started, and ``config`` pointed at it) when the plan has a
    store fault, else (None, ``config``); StartupError when it cannot be started."""
    if not planned(scenario):
        return None, config
    try:
        redis = PrivateRedis(out / "redis").start()
    except PrivateRedisError as e:
        raise StartupError(f"cannot start a private Redis for the store faults: {e}") from None
    return redis, config.model_copy(update={"redis_url": redis.url})


def steps(fault, scale: float) -> list[tuple[float, Any]]:
    """(wall seconds after the workload starts, callable(run)) steps that play ``fault`` on
    ``run.redis``; each notes what it did with ``run.note``."""
    if fault.store_wipe is not None:
        return [(fault.at / scale, lambda run: run.note(f"store wiped: {run.redis.wipe()} keys lost"))]
    if fault.store_stall is not None:
        return _stall_steps(fault, scale)

    def away(run):
        run.redis.go_away()
        run.note(f"store down for {fault.store_outage:g} s")

    def back(run):
        run.redis.come_back()
        run.note("store back")

    return [(fault.at / scale, away), ((fault.at + fault.store_outage) / scale, back)]


def _stall_steps(fault, scale: float) -> list[tuple[float, Any]]:
    def stop(run):
        run.redis.pause()
        run.note(f"store stalled for {fault.store_stall:g} s")

    def go_on(run):
        run.redis.resume()
        run.note("store serves again")

    return [(fault.at / scale, stop), ((fault.at + fault.store_stall) / scale, go_on)]


def keep_images(run) -> threading.Event:
    """With a Redis of the run's own: a thread registers the default images again whenever
    the store lost them, every report interval, until the returned event is set."""
    stop = threading.Event()
    if run.redis is None:
        return stop
    agent, ids = Agent("image-keeper"), run.scenario.cloud.images
    outage = Outage(log, "run-scenario --mode real: keeping the default images")

    def loop():
        while not stop.wait(run.scenario.timing.report_interval / run.scale):
            outage.run(lambda: run.runtime.drive(agent, recovery.keep_default_images(ids, False)))

    threading.Thread(target=loop, name="image-keeper", daemon=True).start()
    return stop
