"""Broker faults in real mode: played on a RabbitMQ node the run starts for itself (real/broker_faults.py)."""

import os
import signal
import time
from pathlib import Path

from common.analysis import report
from common.scenario import with_overrides
from sim.scenario_file import load

ROOT = Path(__file__).resolve().parents[2]


def failed(summary):
    return [(v["name"], v["violations"][:3]) for v in summary["invariants"] if not v["ok"]]


def test_a_broker_fault_with_a_broker_of_the_users_own_is_refused(tmp_path, capsys):
    """A run kills only a node it started: broker_outage with real.amqp_url set is bad input (exit 2), said before
    anything starts."""
    from real import mode

    path = tmp_path / "s.yaml"
    text = (ROOT / "scenarios" / "broker-outage.yaml").read_text()
    path.write_text(text + "  amqp_url: amqp://guest:secret@127.0.0.1:5672//\n")

    class Args:
        scenario, seed, out, no_progress = str(path), None, str(tmp_path / "run"), True

    assert mode.run(Args) == 2
    err = capsys.readouterr().err
    assert "a broker_outage is played on a RabbitMQ node the run starts for itself" in err
    assert "secret" not in err


def queued_on_computes(run):
    from real import transport

    names = [name for name in run._queue_names() if name.startswith("compute.")]
    return sum(depth or 0 for depth in transport.queue_depths(run.config.amqp_url, names).values())


def kill_the_broker_with_launches_queued(patience=30.0, wanted=3):
    """A fault step: pause (SIGSTOP) every compute daemon so that launches queue up on their hosts' queues, wait
    for ``wanted`` of them (bounded), kill -9 the run's node, let the daemons go on and restart the node."""
    from real import broker_faults

    def step(run):
        computes = [proc for name, proc in run.processes.items() if name.startswith("compute.")]
        for proc in computes:
            os.kill(proc.pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + patience
            while queued_on_computes(run) < wanted and time.monotonic() < deadline:
                time.sleep(0.05)
            step.queued = broker_faults.kill(run, 1)
        finally:
            for proc in computes:
                os.kill(proc.pid, signal.SIGCONT)
        broker_faults.restart(run)

    step.queued = None
    return step


def test_a_broker_killed_with_launches_queued_loses_none_of_them(redis_url, tmp_path):
    """Found 8 / reliability A6 for real: launches wait in the compute queues when the run's own RabbitMQ node is
    killed with -9; with durable delivery each one runs after the restart, and every invariant holds."""
    from real.mode import RealRun

    scenario = with_overrides(broker_scenario(), {
        "real.redis_url": redis_url, "real.requests": 12, "real.time_scale": 10,
        "workload.arrivals.rate": 2, "workload.lifetime": None, "timing.build_timeout": 900,
        "faults": [],  # the step below plays the outage, once launches are queued
    })
    step = kill_the_broker_with_launches_queued()
    run = RealRun(scenario, scenario.seed, tmp_path, progress=False, faults=[(0.0, step)], own_broker=True)
    summary = run.execute()
    assert failed(summary) == []
    assert step.queued >= 3
    played = [f["what"] for f in summary["faults"]]
    assert played[0].startswith("broker killed") and played[1].startswith("broker restarted")
    rows = report.instance_rows(run.final_store)
    # Instances live on (no lifetime, so no terminate can hide a launch that never ran):
    # each one accepted either runs or failed at once with its reason (asked for while
    # the broker was away).
    never_ran = [row["id"] for row in rows if row["running_at"] == "" and not row["error"]]
    assert never_ran == []
    assert not [row for row in rows if row["error"].startswith("build timed out")]


def broker_scenario():
    """scenarios/broker-outage.yaml; skips (fails in CI) without libvirt-python or rabbitmq-server."""
    from conftest import service_unavailable

    from real.private_rabbit import server_script

    try:
        import libvirt  # noqa: F401
    except ImportError as e:
        service_unavailable("libvirt-python", str(e))
    if server_script() is None:
        service_unavailable("rabbitmq-server (to start a node of the run's own)", "not installed")
    scenario, _ = load(ROOT / "scenarios" / "broker-outage.yaml")
    return scenario
