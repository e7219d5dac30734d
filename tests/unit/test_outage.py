"""Background threads survive their dependencies' outages and say so once per outage."""

import logging
import threading
from pathlib import Path

from common.scenario import with_overrides
from real.outage import Outage
from real.service import RealService
from sim.scenario_file import load

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def flaky(failures: int):
    """A task that raises ConnectionError ``failures`` times, then works; counts its calls."""
    calls = []

    def task():
        calls.append(1)
        if len(calls) <= failures:
            raise ConnectionError("broker away")
        return len(calls)

    return task, calls


def warnings_of(caplog, text):
    return [r for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def test_an_outage_is_logged_when_it_starts_and_when_it_ends(caplog):
    """Five failed ticks and a good one: two log lines, the second counting the failures."""
    task, _ = flaky(5)
    outage = Outage(logging.getLogger("t"), "beat")
    results = [outage.run(task) for _ in range(6)]
    assert results == [None] * 5 + [6]
    assert [r.getMessage().split(" (")[0] for r in warnings_of(caplog, "beat")] == [
        "beat failing", "beat works again after 5 failed attempts"]
    assert outage.outages == 1 and not outage.failing


class Runtime:
    time_scale = 1.0


def test_a_service_heartbeat_thread_outlives_a_broker_outage(caplog):
    """RealService.every keeps calling a task through ten failures and logs the outage twice, not ten times."""
    service = RealService(Runtime(), "compute", "h1", manager=None, amqp_url="amqp://127.0.0.1:1//", workers=1)
    task, calls = flaky(10)
    done = threading.Event()
    service.every(0.001, lambda: (task(), done.set()), "heartbeat")
    assert done.wait(10)
    service.stop()
    assert len(calls) >= 11
    assert len(warnings_of(caplog, "heartbeat")) == 2


def test_the_real_runs_sampler_outlives_a_store_outage(tmp_path, caplog):
    """The metrics sampler thread skips failing samples and samples again once the store is back."""
    from real.mode import RealRun

    scenario = with_overrides(load(SCENARIOS / "real-small.yaml")[0], {"real.time_scale": 1000})
    run = RealRun(scenario, 1, tmp_path, progress=False)
    task, _ = flaky(4)
    sampled = threading.Event()
    run._sample = lambda: (task(), sampled.set())
    stop = threading.Event()
    sampler = threading.Thread(target=run._sample_until, args=(stop,), daemon=True)
    sampler.start()
    assert sampled.wait(30)
    stop.set()
    sampler.join(5)
    assert len(warnings_of(caplog, "metrics sampling")) == 2


def test_a_service_that_lost_its_consumers_stops_heartbeating_and_says_so():
    """Once its RpcServer gave up, the service calls on_lost and its heartbeat does nothing more."""
    lost = []
    service = RealService(Runtime(), "compute", "h1", manager=None, amqp_url="amqp://127.0.0.1:1//", workers=1,
                          on_lost=lost.append)
    service.server.failed.set()
    service.server.on_failed("3 worker threads died")
    service.heartbeat_once()  # Runtime has no drive(): a beat would raise
    assert lost == ["3 worker threads died"]
