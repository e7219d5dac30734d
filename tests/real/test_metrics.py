"""A running daemon's Prometheus endpoint."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_network_daemon_serves_the_expected_metric_names(redis_url, amqp_url, tmp_path):
    """A network daemon answers /metrics with queue depth, RPC latency, pool and instance families."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "redis_url": redis_url, "amqp_url": amqp_url, "key_prefix": f"novalab-metrics-{port}:",
        "fixed_range": "10.30.0.0/28", "metrics_port": port,
    }))
    proc = subprocess.Popen([sys.executable, "-m", "real.cli", "network", "--host", "metrics1", "--config", str(config)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                time.sleep(0.2)
        for name in ("novalab_queue_depth", "novalab_rpc_handle_seconds", "novalab_pool_free_addresses",
                     "novalab_pool_size_addresses", "novalab_store_recovered", "novalab_instances"):
            assert name in body, f"{name} missing from /metrics"
        assert 'novalab_pool_size_addresses{network="flat"} 13.0' in body
    finally:
        proc.terminate()
        proc.wait(20)
        from real import store, transport

        transport.delete_queues(amqp_url, ["network", "network.metrics1"])
        store.RedisStore(redis_url, prefix=f"novalab-metrics-{port}:").flush()
