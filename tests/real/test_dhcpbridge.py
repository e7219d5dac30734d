"""dnsmasq's lease hook: novalab dhcpbridge casts to the network host, which marks the address."""

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from common import keys, lifecycle, network
from common.effects import HGet, HSet, SCard
from real.runner import Agent, RealRuntime
from real.service import RealService
from real.store import RedisStore
from real.transport import RpcClient, delete_queues

ROOT = Path(__file__).resolve().parents[2]
MAC, OTHER_MAC = "02:16:3e:00:00:01", "02:16:3e:00:00:99"


@pytest.fixture
def deployment(redis_url, amqp_url, tmp_path):
    """A FlatDHCP network host served in-process, with an address allocated to i-1."""
    prefix = f"novalab-dhcp-{uuid.uuid4().hex[:8]}:"
    host = f"dhcp{uuid.uuid4().hex[:6]}"
    store = RedisStore(redis_url, prefix=prefix)
    runtime = RealRuntime(store, lambda: RpcClient(amqp_url))
    manager = network.make_manager(network.NetworkConfig(manager="flatdhcp", fixed_range="10.50.0.0/28"), host)
    agent = Agent("test")
    runtime.drive(agent, manager.create_networks())
    store.execute(HSet(keys.network("flat"), {"host": host}))
    store.execute(HSet(keys.instance("i-1"), {"id": "i-1", "state": lifecycle.SCHEDULING, "fixed_ip": ""}))
    address = runtime.drive(agent, manager.allocate_fixed_ip(None, "i-1", "flat", MAC))["address"]
    svc = RealService(runtime, "network", host, manager, amqp_url=amqp_url, workers=1)
    svc.server.start()
    config = tmp_path / "nova.yaml"
    config.write_text(yaml.safe_dump({"redis_url": redis_url, "amqp_url": amqp_url, "key_prefix": prefix}))
    yield store, runtime, manager, address, str(config), svc.server
    svc.server.stop()
    runtime.close()
    delete_queues(amqp_url, ["network", f"network.{host}"])
    store.flush()


def bridge(config, *argv):
    return subprocess.run([sys.executable, "-m", "real.cli", "dhcpbridge", "--config", config, *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def wait_for(read, expected, seconds=10.0):
    deadline = time.monotonic() + seconds
    while read() != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return read()


def test_lease_event_marks_the_address_leased(deployment):
    """`add MAC IP HOST` from dnsmasq ends with the fixed address marked leased."""
    store, _, _, address, config, _ = deployment
    assert bridge(config, "add", MAC, address, "i-1").returncode == 0
    assert wait_for(lambda: store.execute(HGet(keys.fixedip(address), "state")), "leased") == "leased"


def test_release_of_a_deallocated_address_returns_it_to_the_pool(deployment):
    """`del` for an address its instance gave up puts it back in the pool at once."""
    store, runtime, manager, address, config, _ = deployment
    runtime.drive(Agent("test"), manager.deallocate_fixed_ip(address, "i-1", "flat"))
    free = store.execute(SCard(keys.available("flat")))
    assert bridge(config, "del", MAC, address, "i-1").returncode == 0
    assert wait_for(lambda: store.execute(SCard(keys.available("flat"))), free + 1) == free + 1


def test_stale_release_from_another_mac_changes_nothing(deployment):
    """A release naming another MAC is ignored: the holder keeps its address."""
    store, runtime, manager, address, config, server = deployment
    runtime.drive(Agent("test"), manager.deallocate_fixed_ip(address, "i-1", "flat"))
    assert bridge(config, "del", OTHER_MAC, address, "i-9").returncode == 0
    assert wait_for(lambda: server.served, 1) == 1  # the release was handled, not merely not yet
    assert store.execute(HGet(keys.fixedip(address), "state")) == "deallocated"


def test_bad_arguments_exit_2(deployment):
    """An unknown action or a malformed address is refused with exit status 2."""
    *_, config, _ = deployment
    assert bridge(config, "bogus", MAC, "10.50.0.2").returncode == 2
    assert bridge(config, "add", MAC, "not-an-ip").returncode == 2
