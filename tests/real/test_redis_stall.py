"""A real Redis that stalls past the client's timeout while still running what it was sent (Found 2).

Each test stalls a Redis of its own (real.private_redis: SIGSTOP, then SIGCONT when the
test has seen what it needs), never the machine's shared one.
"""

import shutil
import time

import pytest
from conftest import service_unavailable

from common import invariants as inv
from common import keys
from common.cloud import CloudConfig, CloudController, Quota
from common.context import SYSTEM, RequestContext
from common.effects import HGet, HSet, Transaction
from common.errors import StoreUnavailable, Unroutable
from common.network import FlatManager, NetworkConfig
from real.runner import Agent, RealRuntime
from real.store import RedisStore

#: Seconds the client waits for a reply (the daemons wait their connect_timeout, 5 s).
CLIENT_TIMEOUT = 0.5


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of this test's own (skips, or fails in CI, without redis-server)."""
    if shutil.which("redis-server") is None:
        service_unavailable("redis-server", "not on PATH (bash real/setup/services.sh installs it)")
    from real.private_redis import PrivateRedis

    with PrivateRedis(tmp_path / "redis") as server:
        yield server


def warm_store(url):
    """A RedisStore with a connection already open and the transaction script loaded."""
    store = RedisStore(url, prefix="stall:", socket_timeout=CLIENT_TIMEOUT)
    store.transaction(Transaction(ops=(HGet("warm", "x"),)))
    return store


def test_a_command_sent_during_a_stall_times_out_and_runs_when_the_server_goes_on(private_redis):
    """What sim.store_stall models: on an open connection the client gives up and the write still lands;
    a command that needs a new connection is never sent (its handshake is not answered)."""
    store = warm_store(private_redis.url)
    private_redis.pause()
    try:
        for key in ("sent", "not-sent"):
            with pytest.raises(StoreUnavailable):
                store.execute(HSet(key, {"f": "v"}))
    finally:
        private_redis.resume()
    assert (store.execute(HGet("sent", "f")), store.execute(HGet("not-sent", "f"))) == ("v", None)


class NoBroker:
    """The test runs no RabbitMQ: a launch that gets as far as a call fails it cleanly."""

    def call(self, *args, **kwargs):
        raise Unroutable("no broker in this test")

    cast = call


def i7(store):
    snapshot = inv.Snapshot(now=time.time(), build_timeout=60.0, store=store.dump(), domains={}, queues={})
    return inv.i7_quota_matches_holdings(snapshot)


def test_a_reservation_run_after_its_caller_gave_up_is_given_back_by_the_reaper(private_redis):
    """Found 2, for real: the reservation times out on the client (and so does the request's give-back)
    but runs when the server goes on; I7 holds, and the reaper gives it back, counted, past its deadline."""
    store = warm_store(private_redis.url)
    runtime = RealRuntime(store, NoBroker)
    api = CloudController(CloudConfig(quotas={"p1": Quota(5, 10)}, build_timeout=0.0), FlatManager(NetworkConfig()))
    private_redis.pause()
    try:
        with pytest.raises(StoreUnavailable):
            runtime.drive(Agent("api"), api.run_instances(RequestContext("alice", "p1"), "ami-tiny", "m1.small"))
    finally:
        private_redis.resume()
    held = store.dump()
    assert held[keys.project_usage("p1")]["instances"] == "1" and len(held[keys.RESERVATIONS]) == 1
    assert i7(store).ok
    assert runtime.drive(Agent("reaper"), api.reap_leftovers(SYSTEM))["reservations"] == 1
    after = store.dump()
    assert after[keys.project_usage("p1")]["instances"] == "0" and after[keys.QUOTA_AUDIT]["expired"] == "1"
    assert i7(store).ok
