"""Workers that scale out: ``deploy up --network-workers 2 --schedulers 2`` shares each
topic between its workers, and a real run of scenarios/scaleout.yaml (two network hosts,
two schedulers, one of each killed and restarted) keeps every invariant."""

import csv
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import cloud_users, deploy_env, deployed
from test_real_mode import failed, real_scenario

from real import deploy_roster, processes, transport

#: Instances one RunInstances launches; a few rounds at most before giving up on a worker.
BATCH, ROUNDS = 8, 4


@pytest.fixture(scope="module")
def scaled(redis_url, amqp_url, tmp_path_factory):
    """A deployment of two compute hosts, two network workers and two schedulers, each
    daemon writing its RPC log (``rpc_log`` with ``{name}``)."""
    rpc_log = tmp_path_factory.mktemp("rpc") / "rpc-{name}.csv"
    yield from deployed(redis_url, amqp_url, tmp_path_factory, computes=2, network_workers=2, schedulers=2,
                        environ={"NOVALAB_RPC_LOG": str(rpc_log), "NOVALAB_QUOTA_INSTANCES": str(BATCH * ROUNDS),
                                 "NOVALAB_QUOTA_CORES": str(BATCH * ROUNDS)})


def handled(config) -> Counter:
    """Messages each daemon handled from its topic's shared queue, by consumer (``network.net2``)."""
    counts: Counter = Counter()
    for path in Path(config.rpc_log).parent.glob("rpc-*.csv"):
        with open(path, newline="") as f:
            counts.update(row[7] for row in csv.reader(f) if row[1] in ("network", "scheduler"))
    return counts


def launch_and_settle(ec2, count):
    """Launch ``count`` instances, wait (bounded) until none is pending, terminate them."""
    ids = ec2.run_instances("ami-tiny", "m1.tiny", count, count)
    deadline = time.monotonic() + 120
    while "pending" in ec2.describe_instances(ids).values() and time.monotonic() < deadline:
        time.sleep(0.2)
    states = ec2.describe_instances(ids)
    ec2.terminate_instances(ids)
    return states


def test_status_lists_every_network_worker_and_scheduler_with_a_heartbeat(scaled, capsys):
    """deploy status shows network-net1/net2 and scheduler-sched1/sched2 running, each with a heartbeat."""
    assert scaled.status() == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    for name in ("network-net1", "network-net2", "scheduler-sched1", "scheduler-sched2"):
        assert " running" in lines[name] and " s ago" in lines[name], lines[name]


def test_launches_are_shared_by_both_network_workers_and_both_schedulers(scaled):
    """Instances launched through the API are placed by both schedulers and addressed by both network workers."""
    from real.ec2_client import Ec2Client

    access, secret = cloud_users(scaled)["alice"]
    ec2 = Ec2Client(scaled.ec2_url(scaled.config), f"{access}:demo", secret)
    wanted = {"network.net1", "network.net2", "scheduler.sched1", "scheduler.sched2"}
    for _ in range(ROUNDS):  # RabbitMQ hands a shared queue's messages round the consumers
        assert set(launch_and_settle(ec2, BATCH).values()) == {"running"}
        if wanted <= set(handled(scaled.config)):
            break
    counts = handled(scaled.config)
    assert wanted <= set(counts), counts


def test_the_cli_takes_the_worker_counts(tmp_path):
    """deploy up --network-workers 0 is bad input (exit 2) naming the flag."""
    done = subprocess.run([sys.executable, "-m", "real.cli", "deploy", "up", "--dir", str(tmp_path / "d"),
                           "--network-workers", "0"], capture_output=True, text=True, timeout=60, env=deploy_env())
    assert done.returncode == 2 and "--network-workers must be at least 1" in done.stderr


def test_down_stops_every_worker_and_deletes_every_queue(scaled):
    """deploy down stops both network workers and both schedulers, and their queues go."""
    state = scaled.state()
    pids = {name: scaled.pid(name) for name in state["processes"]}
    assert {"network-net2", "scheduler-sched2"} <= set(pids)
    queues = deploy_roster.queue_names(state)
    assert {"network.net2", "scheduler.sched2"} <= set(queues)
    assert scaled.down() == 0
    assert not any(processes.pid_alive(pid, scaled.marker(name)) for name, pid in pids.items())
    if not state["vhost"]:  # with a vhost of its own, deleting the vhost took them
        assert set(transport.queue_depths(scaled.config.amqp_url, queues).values()) == {None}


def test_a_scaled_out_real_run_keeps_every_invariant_with_a_scheduler_and_a_network_host_killed(
        redis_url, amqp_url, tmp_path):
    """scaleout.yaml for real: net2 and sched2 are SIGKILLed and restarted mid-run, each of the four handles
    messages from its topic, and I1-I7 hold."""
    from real.mode import RealRun

    scenario = real_scenario("scaleout", redis_url, amqp_url)
    run = RealRun(scenario, scenario.seed, tmp_path, progress=False)
    summary = run.execute()
    assert failed(summary) == []
    assert sorted(f["what"] for f in summary["faults"]) == ["killed network.net2", "killed scheduler.sched2",
                                                             "restarted network.net2", "restarted scheduler.sched2"]
    consumers = {row[7] for row in run.recorder.rpc_rows if row[1] in ("network", "scheduler")}
    assert {"network.net1", "network.net2", "scheduler.sched1", "scheduler.sched2"} <= consumers
    assert os.path.exists(tmp_path / "logs" / "network-net2.log")
