"""Web hooks in the sim (scenarios/webhooks.yaml): flaky receivers and an outage still get
every event once, signed, with lag and retries in the summary; a network worker killed
with deliveries pending loses none; a receiver down past the retry budget is given up."""

from pathlib import Path

import pytest

from common.scenario import with_overrides
from sim.run import Simulation
from sim.scenario_file import load

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def run(**overrides):
    loaded, _ = load(SCENARIOS / "webhooks.yaml")
    simulation = Simulation(with_overrides(loaded, overrides), loaded.seed)
    result = simulation.run()
    return simulation, result, result.summary["webhooks"]


@pytest.fixture(scope="module")
def outage_run():
    return run()


def test_every_event_arrives_once_the_receivers_recover(outage_run):
    """After the one-minute outage and 5% failures, every delivery is delivered and nothing is pending."""
    _, result, hooks = outage_run
    assert hooks["deliveries"] == hooks["delivered"] == hooks["received"] > 0
    assert (hooks["pending"], hooks["gave_up"], hooks["dropped"], hooks["bad_signatures"]) == (0, 0, 0, 0)
    assert result.summary["ok"]


def test_the_outage_shows_as_retries_and_lag(outage_run):
    """The outage and failures cost failed attempts, and the lag's p95 is above its p50."""
    _, result, hooks = outage_run
    assert hooks["failed_attempts"] > 0 and hooks["posts"] == hooks["delivered"] + hooks["failed_attempts"]
    assert 0 < hooks["lag_p50"] < hooks["lag_p95"] <= hooks["lag_max"]
    assert "web hook receivers down for 60 s" in [f["what"] for f in result.summary["faults"]]


def test_event_ids_are_unique_and_every_receiver_gets_each(outage_run):
    """Both receivers got the same set of event ids, as many as events, with no duplicate."""
    simulation, _, hooks = outage_run
    seen = list(simulation.receivers.receipts.seen.values())
    assert len(seen) == 2 and seen[0] == seen[1] and len(seen[0]) == hooks["events"]
    assert hooks["duplicates"] == 0


def test_a_network_worker_killed_mid_outage_loses_no_delivery():
    """The delivering network worker dies during the outage and comes back: everything still arrives.
    (Launches while it is down fail for want of an address: that is the kill's, not the hooks'.)"""
    _, result, hooks = run(faults=[{"at": 30, "webhook_outage": 60},
                                   {"at": 60, "kill": "network", "restart_after": 60}])
    assert hooks["deliveries"] == hooks["delivered"] == hooks["received"] and hooks["pending"] == 0
    assert all(v.ok for v in result.verdicts)


def test_a_receiver_down_past_the_retry_budget_is_given_up_and_counted():
    """With two attempts, the deliveries caught by the outage give up; all are accounted for."""
    _, _, hooks = run(**{"webhooks.max_attempts": 2, "webhooks.failure_probability": 0.0})
    assert hooks["gave_up"] > 0 and hooks["pending"] == 0
    assert hooks["delivered"] + hooks["gave_up"] == hooks["deliveries"]


def test_the_same_seed_gives_the_same_fingerprint(outage_run):
    """Web hook deliveries are part of the trace: a second run matches it."""
    _, result, _ = outage_run
    assert run()[1].summary["fingerprint"] == result.summary["fingerprint"]
