"""Fidelity reports and calibration fits, on small made-up rows."""

import re

import pytest

from common.analysis import calibration, fidelity
from common.analysis.calibration import CalibrationError, LaunchPath


def instances(times, state="deleted", error=""):
    """Instance rows as read back from instances.csv: strings, created at 100."""
    return [{"id": f"i-{n}", "state": state, "error": error, "created_at": "100",
             "time_to_running": str(t) if t is not None else ""} for n, t in enumerate(times)]


def rpc(queue, waits, handling=0.01, published=True):
    """RPC rows with the given queue waits (no publish time when ``published`` is off, as in real mode)."""
    return [{"queue": queue, "method": "run_instance", "published_at": "10" if published else "",
             "delivered_at": str(10 + w), "handled_at": str(10 + w + handling)} for w in waits]


def test_the_same_times_to_running_are_not_told_apart():
    """Identical samples: distance 0, p-value 1, not rejected, both sizes given."""
    times = [0.1 * n for n in range(1, 41)]
    report = fidelity.compare(fidelity.RunData(instances(times)), fidelity.RunData(instances(times)))
    assert report["time_to_running_ks"] == 0.0 and report["time_to_running_p_value"] == 1.0
    assert report["time_to_running_rejected"] is False
    assert (report["time_to_running_n_real"], report["time_to_running_n_sim"]) == (40, 40)


def test_times_to_running_far_apart_are_rejected():
    """A sim twenty times slower than the real run: distance 1, rejected at 0.05."""
    real = fidelity.RunData(instances([0.1 + 0.01 * n for n in range(30)]))
    sim = fidelity.RunData(instances([20 + n for n in range(30)] + [None]))
    report = fidelity.compare(real, sim)
    assert report["time_to_running_ks"] == 1.0 and report["time_to_running_rejected"] is True
    assert report["time_to_running_n_sim"] == 30  # the instance that never ran has no time


def test_queue_waits_are_compared_only_where_both_runs_have_them():
    """A real run without publish times gets a note per topic instead of a distance."""
    real = fidelity.RunData(rpc_rows=rpc("compute.host1", [0.1, 0.2], published=False))
    sim = fidelity.RunData(rpc_rows=rpc("compute", [0.1, 0.2]))
    report = fidelity.compare(real, sim)
    assert report["rpc_queue_wait"]["compute"] == {"ks": None, "note": "real run has no publish times for compute"}
    assert report["rpc_handling"]["compute run_instance"]["ks"] == 0.0
    both = fidelity.compare(fidelity.RunData(rpc_rows=rpc("network", [0.1, 0.2])), sim)
    assert both["rpc_queue_wait"]["network"]["note"] == "sim run has no publish times for network"


def test_states_and_error_reasons_are_counted_side_by_side():
    """Each state and each error kind appears once with the real and the simulated count."""
    real = fidelity.RunData(instances([1, 2]) + instances([None], "error", "spawn failed: domain i-1 exists"),
                            summary={"requests": {"rejected": {"RunInstances InstanceLimitExceeded": 2}}})
    sim = fidelity.RunData(instances([1, 2, 3]))
    report = fidelity.compare(real, sim)
    assert report["instance_states"] == {"deleted": {"real": 2, "sim": 3}, "error": {"real": 1, "sim": 0}}
    assert report["error_reasons"] == {"rejected: RunInstances InstanceLimitExceeded": {"real": 2, "sim": 0},
                                       "spawn failed": {"real": 1, "sim": 0}}


def test_an_empty_side_has_no_distance_and_says_why():
    """No times to running in the sim: no KS, and the headline gives the sizes."""
    report = fidelity.compare(fidelity.RunData(instances([1.0])), fidelity.RunData())
    assert report["time_to_running_ks"] is None
    assert "1 real, 0 simulated" in fidelity.headline(report)


# -- calibration ------------------------------------------------------------------------

PATH = LaunchPath(launch_store_ops=4, launch_hops=2, delete_store_ops=2, delete_hops=1)


def lives(n=50):
    """Instances whose stretches are known: store trip 0.01, launch path 0.1 + spread, boot 0.5 + spread."""
    rows = []
    for i in range(n):
        created = 100.0 + i
        spawning = created + 0.1 + 0.002 * i
        launching = spawning + 0.01
        running = launching + 0.5 + 0.01 * i
        rows.append({"created_at": created, "spawning_at": spawning, "launching_at": launching,
                     "running_at": running, "shutting_down_at": running + 10, "deleted_at": running + 10.2})
    return rows


def test_quantile_table_runs_from_the_smallest_to_the_largest_sample():
    """Five points of 0..8: the order statistics at 0, 1/4, 1/2, 3/4 and 1."""
    assert calibration.quantile_table(range(9), points=5) == [0, 2, 4, 6, 8]


def test_time_to_running_method_keeps_the_launch_spread_in_the_boot():
    """Constant store trip and hop; fixed path plus the fitted boot quantiles give back the real times."""
    timing, samples = calibration.fit(lives(), PATH, time_scale=10, method="time_to_running")
    store, hop = timing["store"], timing["rpc"]
    fixed = (PATH.launch_store_ops + 2) * store + PATH.launch_hops * hop
    boots = timing["hypervisor"]["boot_time"]["empirical"]
    times = sorted(r["running_at"] - r["created_at"] for r in lives())
    assert fixed <= times[0] + 1e-9
    assert fixed + boots[0] == pytest.approx(times[0], abs=1e-5)
    assert fixed + boots[-1] == pytest.approx(times[-1], abs=1e-5)
    assert samples["hypervisor.boot_time"] == 50


def test_phases_method_fits_each_stretch_from_its_own_spread():
    """Store trips from spawning->launching, boots from launching->running less a trip, hops share the rest."""
    timing, _ = calibration.fit(lives(), PATH, time_scale=10, method="phases")
    assert set(timing["store"]["empirical"]) == {0.01}
    assert timing["hypervisor"]["boot_time"]["empirical"][0] == pytest.approx(0.5 - 0.01, abs=1e-5)
    hops = timing["rpc"]["empirical"]
    launch_mean = 0.1 + 0.002 * 49 / 2
    assert sum(hops) / len(hops) * 2 == pytest.approx(launch_mean - 4 * 0.01, rel=0.01)


def test_api_latency_is_scaled_from_wall_to_scenario_seconds():
    """Access-log seconds are wall seconds: a 10x run's 0.02 s request is 0.2 scenario seconds."""
    lines = [f'127.0.0.1 - u [02/Dec/2026:03:48:21 +0000] "POST /services/Cloud HTTP/1.1" 200 870 RunInstances - '
             f'0.020s req-{n}' for n in range(6)]
    lines.append('127.0.0.1 - u [x] "POST /services/Cloud HTTP/1.1" 400 70 RunInstances InvalidParameterValue 0.001s r')
    assert calibration.api_latencies(lines) == [0.02] * 6
    timing, samples = calibration.fit(lives(), PATH, 10, calibration.api_latencies(lines))
    assert set(timing["api"]["empirical"]) == {0.2} and samples["api"] == 6


@pytest.mark.parametrize(
    "rows, kwargs, message",
    [
        (lives(3), {}, "spawning -> launching (store round trips): 3 samples, at least 5 are needed"),
        (lives(), {"time_scale": 0}, "time_scale must be positive"),
        (lives(), {"method": "guess"}, "unknown method 'guess'"),
    ],
)
def test_a_run_that_cannot_be_fitted_says_why(rows, kwargs, message):
    """Too few samples, a bad time scale or method: a CalibrationError naming it."""
    with pytest.raises(CalibrationError, match=re.escape(message)):
        calibration.fit(rows, PATH, **{"time_scale": 10, **kwargs})
