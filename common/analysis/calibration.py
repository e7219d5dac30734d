"""Fit the simulator's timing from a real run. Pure: rows in, a timing section out.

What a real run records, per instance (``instances.csv``, scenario seconds: the real
clock runs ``real.time_scale`` times faster than the wall clock, so every value here is
already in the sim's units), and what the sim spends on the same stretch:

==========================  =========================================  ==================
stretch                     the sim spends                             fits
==========================  =========================================  ==================
spawning -> launching       one store round trip                       ``store``
launching -> running        one store round trip + a boot              ``hypervisor.boot_time``
created -> spawning         ``store_ops`` store trips + ``hops`` hops   ``rpc``
shutting_down -> deleted    its store trips + hops + a destroy         ``hypervisor.destroy_time``
==========================  =========================================  ==================

The counts of store trips and hops on a path are the sim's own (``LaunchPath``: the
caller measures them by simulating the scenario with unit latencies), so the fit follows
the managers when they change. The RPC path's spread is shared out over its hops so that
their sum keeps the real mean and variance (a hop is drawn independently each time).
``api`` comes from the API's access log (a RunInstances request's latency, less what
its own store trips and hops cost in the sim, which adds those on top).

Each fitted value is an ``empirical`` distribution (``common.distributions``): the real
spreads are skewed by contention in ways no two-parameter family follows.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass

from common.analysis.fidelity import number

#: Quantiles written per fitted distribution: every percentile is enough to follow the
#: tails of a few hundred samples, and keeps the YAML short.
QUANTILES = 101
#: Fewest samples a stretch needs before it is fitted (fewer say nothing about a tail).
MIN_SAMPLES = 5

_ACCESS_LINE = re.compile(r'" (?P<status>\d{3}) \d+ (?P<action>\S+) (?P<code>\S+) (?P<seconds>[0-9.]+)s ')


class CalibrationError(ValueError):
    """A run that cannot be fitted; ``str()`` says what is missing."""


@dataclass(frozen=True)
class LaunchPath:
    """Store round trips and broker hops the sim spends on each stretch it is fitted on."""

    #: created -> spawning of a launch.
    launch_store_ops: int
    launch_hops: int
    #: shutting_down -> deleted of a terminate.
    delete_store_ops: int
    delete_hops: int
    #: Inside one RunInstances request, after the API latency.
    request_store_ops: int = 0
    request_hops: int = 0


def quantile_table(samples, points: int = QUANTILES) -> list[float]:
    """``points`` quantiles of ``samples`` at evenly spaced probabilities 0..1 (linear
    interpolation between order statistics), rounded to microseconds."""
    ordered = sorted(samples)
    out = []
    for i in range(points):
        position = i / (points - 1) * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        value = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
        out.append(round(max(0.0, value), 6))
    return out


def _stretch(rows, start: str, end: str) -> list[float]:
    out = []
    for row in rows:
        begun, ended = number(row.get(start)), number(row.get(end))
        if begun is not None and ended is not None:
            out.append(ended - begun)
    return out


def api_latencies(access_log_lines, action: str = "RunInstances") -> list[float]:
    """Wall seconds of the successful ``action`` requests in an API access log."""
    out = []
    for line in access_log_lines:
        match = _ACCESS_LINE.search(line)
        if match and match["action"] == action and match["status"] == "200":
            out.append(float(match["seconds"]))
    return out


def _needs(samples, what: str):
    if len(samples) < MIN_SAMPLES:
        raise CalibrationError(f"{what}: {len(samples)} samples, at least {MIN_SAMPLES} are needed")


#: How the real spread is shared out (see ``fit``).
METHODS = ("phases", "time_to_running")


def fit(instance_rows, path: LaunchPath, time_scale: float, api_wall_seconds=(),
        method: str = "phases") -> tuple[dict, dict]:
    """-> (timing section in scenario form, sample sizes per fitted field).

    ``method``: ``phases`` fits each stretch from its own spread (the table in the module
    docstring); ``time_to_running`` takes the typical store trip and hop (medians, as
    constants) and lets the boot carry the whole spread of a launch (created -> running,
    less those constants): what the sim does not model per step (contention for the
    machine's cores, the broker's and Redis's queues) shows up once per launch, where its
    effect on the time to running is what was measured."""
    if method not in METHODS:
        raise CalibrationError(f"unknown method {method!r}; expected one of: {', '.join(METHODS)}")
    if not time_scale > 0:
        raise CalibrationError(f"time_scale must be positive, got {time_scale}")
    store = _stretch(instance_rows, "spawning_at", "launching_at")
    _needs(store, "spawning -> launching (store round trips)")
    launch = _stretch(instance_rows, "created_at", "spawning_at")
    _needs(launch, "created -> spawning (launch RPC path)")
    if path.launch_hops <= 0:
        raise CalibrationError("the sim's launch path has no broker hop to fit")
    store_spec: float | dict
    rpc_spec: float | dict
    if method == "phases":
        store_mean = statistics.fmean(store)
        boot = [t - store_mean for t in _stretch(instance_rows, "launching_at", "running_at")]
        _needs(boot, "launching -> running (boots)")
        hops = _hop_samples(launch, path.launch_store_ops, path.launch_hops, store_mean, statistics.pvariance(store))
        hop_mean = statistics.fmean(hops)
        store_spec, rpc_spec = {"empirical": quantile_table(store)}, {"empirical": quantile_table(hops)}
    else:
        launches = _stretch(instance_rows, "created_at", "running_at")
        _needs(launches, "created -> running (launches)")
        store_mean = statistics.median(store)
        hop_mean = max(0.0, (statistics.median(launch) - path.launch_store_ops * store_mean) / path.launch_hops)
        # created -> running in the sim: the launch path, one trip to launching, a boot, one
        # trip to running. Scaled down, if need be, to fit under the fastest real launch, so
        # that no boot has to be negative.
        fixed = (path.launch_store_ops + 2) * store_mean + path.launch_hops * hop_mean
        shrink = min(1.0, min(launches) / fixed) if fixed > 0 else 1.0
        store_mean, hop_mean, fixed = store_mean * shrink, hop_mean * shrink, fixed * shrink
        boot = [t - fixed for t in launches]
        store_spec, rpc_spec = round(store_mean, 6), round(hop_mean, 6)

    delete = _stretch(instance_rows, "shutting_down_at", "deleted_at")
    _needs(delete, "shutting_down -> deleted (destroys)")
    destroy = [t - path.delete_store_ops * store_mean - path.delete_hops * hop_mean for t in delete]

    timing = {
        "store": store_spec,
        "rpc": rpc_spec,
        "hypervisor": {"boot_time": {"empirical": quantile_table(boot)},
                       "destroy_time": {"empirical": quantile_table(destroy)}},
    }
    samples = {"store": len(store), "rpc": len(launch), "hypervisor.boot_time": len(boot),
               "hypervisor.destroy_time": len(delete)}
    api = [s * time_scale - path.request_store_ops * store_mean - path.request_hops * hop_mean
           for s in api_wall_seconds]
    if len(api) >= MIN_SAMPLES:
        timing["api"] = {"empirical": quantile_table(api)}
        samples["api"] = len(api)
    return timing, samples


def _hop_samples(launch, store_ops: int, hops: int, store_mean: float, store_var: float) -> list[float]:
    """One hop per launch: the launch path's time less its store trips, over its hops,
    with the spread scaled so that ``hops`` independent draws (plus the store trips'
    own spread) give the launch path's real variance."""
    mean = statistics.fmean(launch)
    left_variance = max(0.0, statistics.pvariance(launch) - store_ops * store_var)
    spread = statistics.pstdev(launch)
    scale = math.sqrt(left_variance / hops) / spread if spread else 0.0
    hop_mean = max(0.0, (mean - store_ops * store_mean) / hops)
    return [max(0.0, hop_mean + (t - mean) * scale) for t in launch]
