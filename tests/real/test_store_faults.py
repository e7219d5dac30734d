"""Store faults in real mode, played on a Redis the run starts for itself (Reliability D1, D4)."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def redis_server():
    """Skips (fails in CI) without the redis-server program."""
    if shutil.which("redis-server") is None:
        from conftest import service_unavailable

        service_unavailable("redis-server", "not on PATH (bash real/setup/services.sh installs it)")


def scenario_file(tmp_path, faults, **real):
    """real-small with ``faults``, sixty launches and no SLO (launches during the hold fail by design)."""
    data = yaml.safe_load((ROOT / "scenarios" / "real-small.yaml").read_text())
    data.update(name="real-small-store-faults", faults=faults, slo={})
    data["workload"]["requests"] = 60
    data["real"].update(requests=60, **real)
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_scenario(path, out):
    return subprocess.run([sys.executable, "-c", "import sim.cli as c; c.run_scenario_main()", str(path), "--mode",
                           "real", "--no-progress", "--no-plots", "--no-fidelity", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_a_private_redis_is_wiped_taken_away_with_its_data_and_stopped(redis_server, tmp_path):
    """wipe empties it; an outage refuses connections and keeps the data; stop leaves no server behind."""
    from real.private_redis import PrivateRedis

    with PrivateRedis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        client.set("kept", "1")
        server.go_away()
        with pytest.raises(redis.ConnectionError):
            client.get("kept")
        server.come_back()
        assert client.get("kept") == b"1"
        assert server.wipe() == 1 and client.dbsize() == 0
    assert not server.running and not (tmp_path / "dump.rdb").exists()


def test_a_store_fault_on_a_redis_of_your_own_is_refused(tmp_path):
    """A plan with a store fault and real.redis_url set exits 2 naming the setting, before anything starts."""
    path = scenario_file(tmp_path, [{"at": 10, "store_wipe": True}], redis_url="redis://db.example:6379/0")
    done = run_scenario(path, tmp_path / "run")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "redis_url names one of yours (redis://db.example:6379/0; real.redis_url or --config)" in done.stderr


def needs_libvirt():
    """Skips (fails in CI) without libvirt-python, which a real run's compute daemons need."""
    try:
        import libvirt  # noqa: F401
    except ImportError as e:
        from conftest import service_unavailable

        service_unavailable("libvirt-python", str(e))


def test_a_store_outage_then_a_wipe_mid_run_recovers_for_real(redis_server, amqp_url, tmp_path):
    """run-scenario exits 0: I1-I7 hold, the loss is counted, and launches after the hold ran."""
    needs_libvirt()
    path = scenario_file(tmp_path, [{"at": 5, "store_outage": 10}, {"at": 25, "store_wipe": True}], amqp_url=amqp_url)
    out = tmp_path / "run"
    done = run_scenario(path, out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [f["what"].split(":")[0] for f in summary["faults"]] == ["store down for 10 s", "store back", "store wiped"]
    assert summary["recovered"]["hosts"] == 4 and summary["recovered"]["pools"] == 1
    with open(out / "instances.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: float(r["created_at"]))
    failed = [r for r in rows if r["error"]]
    last_failure = float(failed[-1]["created_at"]) if failed else 0.0
    assert any(r["running_at"] for r in rows if float(r["created_at"]) > last_failure)


def test_a_store_stall_mid_run_leaks_nothing_for_real(redis_server, amqp_url, tmp_path):
    """The run's own Redis stopped for 8 wall seconds (past the daemons' 5 s client timeout) while launches
    run, then continued with what they sent: run-scenario exits 0 (I1-I7 hold) and names the stall."""
    needs_libvirt()
    path = scenario_file(tmp_path, [{"at": 5, "store_stall": 80}], amqp_url=amqp_url)  # time_scale 10
    out = tmp_path / "run"
    done = run_scenario(path, out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [f["what"] for f in summary["faults"]] == ["store stalled for 80 s", "store serves again"]
    assert summary["quota"]["reservations_outstanding"] == 0
