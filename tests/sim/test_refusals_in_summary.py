"""Every refused or failed API action shows in the summary, by action, code and message;
the API's admission queue is a series; zero quotas run; memory is a placement capacity."""

import pytest

from common.scenario import parse, with_overrides
from sim.run import simulate


def crowded(**workload):
    """3 hosts with memory for two m1.medium each (vCPUs for four), a project that may not
    launch, one floating address per project, and floating addresses taken mid-boot."""
    return parse({
        "name": "crowded",
        "cloud": {
            "hosts": {"count": 3, "vcpus": 8, "memory_mb": 4096},
            "network": {"manager": "flat", "fixed_range": "10.0.0.0/24", "floating_range": "4.4.4.0/29"},
            "api_workers": 1,
            "projects": [{"id": "p1", "quota": {"instances": 100, "cores": 400, "floating_ips": 1}},
                         {"id": "p0", "quota": {"instances": 0, "cores": 0, "floating_ips": 0}}],
        },
        "workload": {"arrivals": {"rate": 5}, "requests": 24, "projects": {"p1": 3, "p0": 1},
                     "instance_types": {"m1.medium": 1}, "lifetime": 200, "floating_ips": 1.0,
                     "floating_delay": 1, **workload},
        "metrics": {"interval": 1},
    })


@pytest.fixture(scope="module")
def result():
    return simulate(crowded(), 3)


def test_a_zero_quota_is_refused_and_counted(result):
    """A project with zero quota gets InstanceLimitExceeded, counted with its message."""
    api = result.summary["api"]
    assert api["errors"]["RunInstances InstanceLimitExceeded"] > 0
    assert any("quota is 0 instances" in m for m in api["reasons"]["RunInstances InstanceLimitExceeded"])


def test_associate_on_a_launching_instance_is_counted_with_its_reason(result):
    """AssociateAddress one second after launch is refused (still booting) and the reason is in the summary."""
    reasons = result.summary["api"]["reasons"]["AssociateAddress InvalidParameterValue"]
    assert reasons.get("instance i-… is launching, not running", 0) > 0


def test_floating_quota_refusals_are_counted(result):
    """AllocateAddress past the project's floating quota is counted by code and message."""
    reasons = result.summary["api"]["reasons"]["AllocateAddress AddressLimitExceeded"]
    assert reasons == {"project p1 may hold 1 floating addresses": result.summary["api"]["errors"][
        "AllocateAddress AddressLimitExceeded"]}


def test_the_admission_queue_is_a_series(result):
    """The API's waiting requests are sampled as the api_queue series, and the peak is in the summary."""
    rows = [row for row in result.recorder.series if row[1] == "api_queue"]
    assert {row[2] for row in rows} == {"waiting", "in service"}
    assert result.summary["api"]["admission_queue_peak"] >= max(row[3] for row in rows if row[2] == "waiting")


def test_the_scheduler_places_by_memory(result):
    """Hosts run out of memory before vCPUs: launches past it fail as no valid host, never at spawn."""
    assert set(result.summary["instances"]["errors_by_reason"]) == {"no valid host"}


def test_queue_dispatch_has_no_placement_so_the_hypervisor_refuses():
    """2010's queue dispatch never looks at memory: a full host's hypervisor refuses the spawn."""
    queued = simulate(with_overrides(crowded(), {"cloud.scheduler": "queue"}), 3)
    assert "spawn failed" in queued.summary["instances"]["errors_by_reason"]
