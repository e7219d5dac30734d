"""Web hooks against ``novalab deploy up``: a receiver on 127.0.0.1 registered with
``novalab manage webhook add`` gets signed events of a launch through the EC2 API, gets
every event after failing for a while, and loses none when the network worker (which
delivers) is SIGKILLed with deliveries pending and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import cloud_users

from common import keys, webhooks
from real.webhooks import Receiver

#: Seconds a test waits for what it needs (deliveries retry at 1, 2, 4... s; a lease is 30 s).
WAIT = 120.0
#: Events of one launch and terminate on a flat network.
LAUNCH_EVENTS = {"instance.pending", "address.fixed.allocated", "instance.running", "instance.shutting-down",
                 "instance.terminated", "address.fixed.released"}


def _manage(cloud, *args):
    return subprocess.run([sys.executable, "-m", "real.cli", "manage", "--config", str(cloud.config_path),
                           "webhook", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def receiver(cloud):
    """A receiver registered for project demo (its secret from ``manage webhook add``), removed after the test."""
    got = Receiver().start()
    added = _manage(cloud, "add", "demo", got.url)
    assert added.returncode == 0, added.stderr
    got.secrets["demo"] = added.stdout.split("secret ", 1)[1].strip()
    yield got
    _manage(cloud, "remove", "demo", got.url)
    got.stop()


def _ec2(cloud):
    from real.ec2_client import Ec2Client

    access, secret = cloud_users(cloud)["alice"]
    return Ec2Client(cloud.ec2_url(cloud.config), f"{access}:demo", secret)


def _launch_and_terminate(cloud) -> str:
    ec2 = _ec2(cloud)
    (instance,) = ec2.run_instances("ami-tiny", "m1.tiny")
    _until(lambda: ec2.describe_instances([instance]).get(instance) == "running")
    ec2.terminate_instances([instance])
    _until(lambda: ec2.describe_instances([instance]).get(instance) in ("terminated", None))
    return instance


def _until(condition, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _events_of(receiver, instance) -> set[str]:
    return {event["type"] for _, event in receiver.events
            if event["data"].get("instance_id") == instance}


def _pending(cloud) -> int:
    import redis

    return redis.Redis.from_url(cloud.config.redis_url).zcard(cloud.config.key_prefix + keys.WEBHOOK_PENDING)


def test_a_launch_sends_signed_events_with_unique_ids(cloud, receiver):
    """Running and terminated (and the rest of the launch's events) arrive signed, each id once, in the header too."""
    instance = _launch_and_terminate(cloud)
    _until(lambda: _events_of(receiver, instance) >= LAUNCH_EVENTS)
    for headers, event in receiver.events:
        assert headers[webhooks.EVENT_ID_HEADER] == event["id"] and event["project"] == "demo"
    running = next(e for _, e in receiver.events if e["type"] == "instance.running")
    assert running["data"]["state"] == "running" and running["data"]["host"] == "host1"
    assert receiver.bad_signatures == 0 and len(set(receiver.event_ids())) == len(receiver.event_ids())


def test_a_receiver_that_fails_for_a_while_gets_every_event(cloud, receiver):
    """While it answers 503 the events wait in the store; once it answers 200 every one arrives."""
    receiver.down.set()
    instance = _launch_and_terminate(cloud)
    _until(lambda: receiver.posts >= 3)  # attempted, refused, retried
    assert _events_of(receiver, instance) == set()
    receiver.down.clear()
    _until(lambda: _events_of(receiver, instance) >= LAUNCH_EVENTS)
    _until(lambda: _pending(cloud) == 0)


def test_killing_the_delivering_worker_loses_no_pending_delivery(cloud, receiver):
    """SIGKILL the network daemon with deliveries pending, start it again: every event arrives."""
    from real.processes import daemon_env, novalab_command, spawn

    receiver.down.set()
    instance = _launch_and_terminate(cloud)
    _until(lambda: _pending(cloud) >= len(LAUNCH_EVENTS))
    os.kill(cloud.pid("network-net1"), signal.SIGKILL)
    _until(lambda: not cloud.running("network-net1"))
    receiver.down.clear()
    assert _pending(cloud) >= len(LAUNCH_EVENTS)  # nobody delivers them now; the store keeps them
    process = spawn(novalab_command("network", "--host", "net1", "--config", str(cloud.config_path)),
                    cloud.logs / "network-net1.log", daemon_env(), detach=True)
    cloud._record("network-net1", process.pid)  # deploy down stops it
    _until(lambda: _events_of(receiver, instance) >= LAUNCH_EVENTS)
    _until(lambda: _pending(cloud) == 0)
