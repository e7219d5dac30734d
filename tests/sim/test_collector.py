"""The collector's thresholds during a run (sim/collector.py)."""

import gc
from pathlib import Path

import pytest

from sim import collector
from sim.run import simulate
from sim.scenario_file import load

CRASH_RESTART = Path(__file__).resolve().parents[2] / "scenarios" / "crash-restart.yaml"


@pytest.fixture
def thresholds():
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_a_run_gives_the_caller_its_thresholds_back(thresholds):
    """Thresholds set before a run are the ones in force after it."""
    gc.set_threshold(123, 4, 5)
    simulate(load(CRASH_RESTART)[0])
    assert gc.get_threshold() == (123, 4, 5)


def test_the_thresholds_come_back_when_the_block_raises(thresholds):
    """A run that fails still restores the caller's thresholds."""
    gc.set_threshold(321, 5, 4)
    with pytest.raises(RuntimeError), collector.tuned():
        raise RuntimeError("the run failed")
    assert gc.get_threshold() == (321, 5, 4)


def test_when_the_collector_runs_does_not_change_a_run(thresholds, monkeypatch):
    """A scenario with a kill and a restart gives one fingerprint whether the collector
    runs all the time or almost never."""
    scenario = load(CRASH_RESTART)[0]
    fingerprints = set()
    for young, middle, old in ((10, 1, 1), (10**6, 1000, 1000)):
        monkeypatch.setattr(collector, "YOUNG", young)
        monkeypatch.setattr(collector, "MIDDLE", middle)
        monkeypatch.setattr(collector, "OLD", old)
        fingerprints.add(simulate(scenario).summary["fingerprint"])
    assert len(fingerprints) == 1
