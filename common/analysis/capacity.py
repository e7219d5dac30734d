"""What a scenario asks of its cloud on average, by Little's law. Pure.

An instance holds its vCPUs and its fixed address from about the launch request until its
terminate request: ``workload.lifetime`` (launch request to terminate request) already
includes the boot. With requests arriving at ``rate`` per second, the mean number of
instances alive at once in the steady state is ``rate x instances_per_request x mean
lifetime``; the number alive at a given moment fluctuates around it (for Poisson
arrivals it is Poisson distributed, so peaks run a few standard deviations, ``sqrt(mean)``,
above the mean). A scenario without lifetime keeps every instance, so its demand is the
whole workload.
"""

from __future__ import annotations

import math


def expected_demand(scenario) -> dict:
    """Mean steady-state demand against capacity:

    ``instances`` (alive at once), ``instances_p99`` (a rough 99th percentile, Poisson),
    ``vcpus`` (claimed at once) and ``vcpu_capacity`` (hosts x vCPUs),
    ``vcpu_load`` (their ratio), ``mean_vcpus`` (per instance), and ``arrival_span``
    (seconds over which requests arrive)."""
    cloud, workload = scenario.cloud, scenario.workload
    per_second = workload.arrivals.rate * workload.instances_per_request
    total = workload.requests * workload.instances_per_request
    instances = float(total) if workload.lifetime is None else min(float(total), per_second * workload.lifetime.mean)
    weights = workload.instance_types
    weight_sum = sum(weights.values())
    mean_vcpus = sum(w * cloud.instance_types[name].vcpus for name, w in weights.items()) / weight_sum
    capacity = cloud.hosts.count * cloud.hosts.vcpus
    return {
        "instances": instances,
        "instances_p99": instances + 2.33 * math.sqrt(instances),
        "mean_vcpus": mean_vcpus,
        "vcpus": instances * mean_vcpus,
        "vcpu_capacity": capacity,
        "vcpu_load": instances * mean_vcpus / capacity if capacity else math.inf,
        "arrival_span": workload.requests / workload.arrivals.rate,
    }
