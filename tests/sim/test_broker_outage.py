"""Broker outages in the sim: the broker model's restart, and whole runs through one (reliability A6, A7)."""

from pathlib import Path

import pytest
import simpy

from common.analysis import report
from common.effects import Call
from common.errors import RpcTimeout
from common.scenario import Timing, with_overrides
from sim.broker import Broker, BrokerDown, ChannelError
from sim.recorder import Recorder
from sim.run import simulate
from sim.runtime import SimRuntime
from sim.scenario_file import load
from sim.store import SimStore

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "broker-outage.yaml"


def broker_with(durable):
    """A broker with one queue ``q`` (durable or not) bound to its own name."""
    env = simpy.Environment()
    broker = Broker(env)
    broker.declare_queue("q", durable=durable)
    broker.bind("q", "q")
    return env, broker


# -- the broker model -------------------------------------------------------------------


def test_a_durable_queue_keeps_its_persistent_messages_across_a_restart_and_only_those():
    """As RabbitMQ recovers a classic durable queue: persistent messages stay, transient ones are lost."""
    _, broker = broker_with(durable=True)
    broker.publish("q", "kept", persistent=True)
    broker.publish("q", "gone", persistent=False)
    broker.crash()
    assert broker.restart() == 1
    got = []
    broker.consume(["q"], 5, got.append, "c")
    simpy_run(broker)
    assert [d.body for d in got] == ["kept"]


def test_a_transient_queue_is_gone_after_a_restart_until_declared_again():
    """A transient queue loses everything, even persistent messages, and its binding: publishes are unroutable."""
    _, broker = broker_with(durable=False)
    broker.publish("q", "x", persistent=True)
    broker.crash()
    assert broker.restart() == 1
    assert broker.publish("q", "y") is False
    with pytest.raises(KeyError):
        broker.consume(["q"], 1, lambda d: None, "c")
    broker.declare_queue("q")
    broker.bind("q", "q")
    assert broker.publish("q", "z") is True


def test_while_down_every_client_operation_fails():
    """Between crash and restart, publish, declare, bind and consume raise BrokerDown."""
    _, broker = broker_with(durable=True)
    broker.crash()
    for operation in (lambda: broker.publish("q", "x"), lambda: broker.declare_queue("r"),
                      lambda: broker.bind("q", "q"), lambda: broker.consume(["q"], 1, print, "c")):
        with pytest.raises(BrokerDown):
            operation()


def test_a_crash_cuts_consumers_off_and_their_unacked_deliveries_survive_when_persistent():
    """Unacked deliveries go back to the queue at the crash; a durable queue redelivers them after the restart."""
    _, broker = broker_with(durable=True)
    got = []
    consumer = broker.consume(["q"], 1, got.append, "c")
    broker.publish("q", "work", persistent=True)
    broker.crash()
    assert consumer.closed and broker.queue_stats()["q"]["unacked"] == 0
    broker.restart()
    again = []
    broker.consume(["q"], 1, again.append, "c")
    simpy_run(broker)
    assert [(d.body, d.redelivered) for d in again] == [("work", True)]


def test_declaring_a_queue_again_with_the_other_durability_is_refused():
    """PRECONDITION_FAILED, as RabbitMQ answers an inequivalent declaration."""
    _, broker = broker_with(durable=True)
    with pytest.raises(ChannelError, match="inequivalent arg 'durable'"):
        broker.declare_queue("q", durable=False)


def simpy_run(broker):
    """Let zero-delay deliveries (consume hands waiting messages over one event later) happen."""
    broker.env.run()


# -- whole runs -----------------------------------------------------------------------------


def outage_run(seed, durable, fault=None):
    scenario, _ = load(SCENARIO)
    overrides = {"cloud.durable_delivery": durable}
    if fault is not None:
        overrides["faults"] = [fault]
    return simulate(with_overrides(scenario, overrides), seed)


def timed_out(result):
    """Launches the reaper failed: accepted, then lost."""
    return sum(n for reason, n in result.summary["instances"]["errors_by_reason"].items()
               if reason.startswith("build timed out"))


def test_without_durable_delivery_a_broker_outage_loses_accepted_launches():
    """Reliability G5 for A6: with transient queues the restart drops the queued run_instance casts and the
    build timeout fails those launches (every invariant still holds: the loss is detected, not silent)."""
    results = [outage_run(seed, durable=False) for seed in range(3)]
    assert sum(r.summary["messages_lost_at_broker_restart"] for r in results) > 0
    assert sum(timed_out(r) for r in results) > 0
    assert all(v.ok for r in results for v in r.verdicts)


@pytest.mark.parametrize("seed, fault", [
    (0, None), (1, {"at": 12, "broker_outage": 2}), (2, {"at": 33, "broker_outage": 40}),
    (3, {"at": 61.7, "broker_outage": 7}),
])
def test_with_durable_delivery_a_broker_outage_loses_no_accepted_launch(seed, fault):
    """Reliability A6: the queued casts survive the restart, the services reconnect, every launch accepted before
    the outage runs, and every invariant holds."""
    result = outage_run(seed, durable=True, fault=fault)
    assert [v.name for v in result.verdicts if not v.ok] == []
    assert timed_out(result) == 0 and result.summary["messages_lost_at_broker_restart"] == 0
    played = [f["what"] for f in result.summary["faults"]]
    assert played[0].startswith("broker killed") and played[1].startswith("broker restarted")
    assert result.summary["instances"]["running"] + result.summary["instances"]["deleted"] > 0


def test_after_an_outage_every_service_consumes_again():
    """Reliability A7: each service reconnected (both its queues have a consumer) and launches after it ran."""
    result = outage_run(1, durable=True)
    assert all(stats["consumers"] == 1 or queue == "compute" for queue, stats in result.broker_stats.items())
    assert result.broker_stats["compute"]["consumers"] == 4
    restarted = float(result.summary["faults"][1]["at"])
    later = [row for row in report.instance_rows(result.snapshot.store) if row["created_at"] > restarted + 10]
    assert later and all(row["running_at"] != "" for row in later)


def test_a_call_waiting_at_the_kill_fails_at_once():
    """A caller's reply address dies with its connection: RpcTimeout at the kill, not at the call's timeout."""
    env, broker = broker_with(durable=True)
    runtime = SimRuntime(env, 0, SimStore(), broker, Timing(), Recorder())
    outcome = []

    def caller():
        try:
            yield Call("q", "echo", {}, timeout=30.0)
        except RpcTimeout as e:
            outcome.append((env.now, str(e)))

    def kill():
        yield env.timeout(1.0)
        broker.crash()
        runtime.connections_lost()

    env.process(runtime.drive(runtime.agent("api"), caller()))
    env.process(kill())
    env.run()
    assert outcome and outcome[0][0] == 1.0 and "connection to the broker lost" in outcome[0][1]
