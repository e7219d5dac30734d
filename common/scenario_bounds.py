"""Upper bounds of a scenario, and the estimate of a run's work they are checked on.

Every size a scenario can name has a bound, so a scenario that validates also
finishes. ``work_problem`` estimates a run's periodic ticks and samples from its span
(arrivals, a long lifetime, the drain) and names the field to change.
"""

from __future__ import annotations

# Every size a scenario can name has an upper bound, so that a scenario that validates
# also finishes: within a few hours and a few GiB on a 2-core, 24 GiB machine (the sim
# does ~10,000 effects per wall second; a request costs ~100 effects and ~10 KiB).

#: Compute hosts: 10,000 is ten times 2010's largest deployments and ~1 GiB of sim state.
MAX_HOSTS = 10_000
#: RunInstances requests of one run: 100,000 requests are ~10^7 effects, ~20 minutes.
MAX_REQUESTS = 100_000
#: Instances one run may launch in all (requests x instances_per_request): ~10 KiB each.
MAX_INSTANCES = 1_000_000
#: Any duration (lifetimes, delays, timeouts, fault times): 30 days of scenario time.
MAX_SECONDS = 30 * 24 * 3600.0
#: Periodic ticks (heartbeats, periodic tasks, domain syncs) over the estimated span of
#: a run, summed over hosts: each costs a few effects, so 2*10^7 is about an hour.
MAX_PERIODIC_TICKS = 20_000_000
#: Time-series samples over the estimated span of a run (one row each in memory).
MAX_SAMPLES = 1_000_000
#: vCPUs and MiB of one host or instance type (the largest 2010 machines had far less).
MAX_VCPUS = 4096
MAX_MEMORY_MB = 64 * 1024 * 1024
#: Workers, projects, types, images, faults: small lists in practice; bounded for memory.
MAX_WORKERS = 1024
MAX_PROJECTS = 200
MAX_CHOICES = 100
MAX_FAULTS = 1000
#: Relative weights: finite and small enough that their sum stays finite.
MAX_WEIGHT = 1e6
#: Quotas: 10^9 is "unlimited" in practice and keeps the store's counters small.
MAX_QUOTA = 1_000_000_000


def typical_high(dist) -> float:
    """A high but typical draw of a duration distribution: a uniform's high, a
    lognormal's p95, an empirical one's last quantile, otherwise the mean (plus 3
    standard deviations for a normal)."""
    for name in ("high", "p95"):
        if hasattr(dist, name):
            return float(getattr(dist, name))
    if hasattr(dist, "quantiles"):
        return float(max(dist.quantiles))
    return float(dist.mean) + 3 * float(getattr(dist, "stddev", 0.0))


def estimated_span(scenario) -> float:
    """Scenario seconds a run is expected to take: the arrivals, a long lifetime (or
    floating delay), the drain. An estimate for bounding work, not a prediction."""
    spec = scenario.workload
    arrivals = spec.requests / spec.arrivals.rate
    tail = max(typical_high(spec.lifetime) if spec.lifetime is not None else 0.0, typical_high(spec.floating_delay))
    return arrivals + tail + scenario.drain_timeout

def work_problem(scenario) -> str | None:
    """Why a scenario that validates would still not finish (the MAX_* bounds say why
    they are where they are), naming the field to change; None when it fits."""
    spec, timing = scenario.workload, scenario.timing
    if spec.requests * spec.instances_per_request > MAX_INSTANCES:
        return (
            f"workload.requests: {spec.requests} x instances_per_request {spec.instances_per_request} "
            f"launches more than {MAX_INSTANCES:,} instances")
    span = estimated_span(scenario)
    services = scenario.cloud.hosts.count + scenario.cloud.network.hosts + scenario.cloud.schedulers
    per_second = (1 / timing.report_interval + 1 / timing.periodic_interval + 1 / timing.domain_sync_interval)
    ticks = services * span * per_second
    if ticks > MAX_PERIODIC_TICKS:
        return (
            f"workload: a run of ~{span:,.0f} s (requests / arrivals.rate + lifetime + drain_timeout) with "
            f"{services} services ticking every timing.report_interval is ~{ticks:,.0f} periodic ticks, "
            f"over the bound of {MAX_PERIODIC_TICKS:,}: fewer hosts or requests, a higher rate, or shorter lifetimes")
    samples = span / scenario.metrics.interval
    if samples > MAX_SAMPLES:
        return (
            f"metrics.interval: {scenario.metrics.interval:g} s over a run of ~{span:,.0f} s is ~{samples:,.0f} "
            f"samples, over the bound of {MAX_SAMPLES:,}")
    return None
