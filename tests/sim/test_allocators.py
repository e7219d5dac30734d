"""The SPOP pool against the 2010 check-then-act allocator, under per-command latency."""

import random

from harness import run_all, runtime
from racy_allocator import allocate_check_then_act

from common import keys, lifecycle
from common.effects import HSet, SAdd
from common.network import FlatManager, NetworkConfig

SEEDS = range(200)
CONCURRENT = 12
NETWORK = NetworkConfig(fixed_range="10.1.0.0/24")


def _fresh(seed):
    random.seed(seed)  # fakeredis SPOP
    rt = runtime(seed)
    manager = FlatManager(NETWORK)
    run_all(rt, "setup", [manager.create_networks()])
    return rt, manager


def _waiting_instance(instance_id):
    yield HSet(keys.instance(instance_id), {"id": instance_id, "state": lifecycle.SCHEDULING, "fixed_ip": ""})
    yield SAdd(keys.INSTANCES, (instance_id,))


def _duplicates(addresses):
    taken = [a for a in addresses if isinstance(a, str)]
    return len(taken) - len(set(taken))


def test_check_then_act_allocator_hands_out_duplicates():
    """The 2010 allocator gives one address to two instances for some seed."""
    failing = 0
    for seed in SEEDS:
        rt, _ = _fresh(seed)
        got = run_all(rt, "api", [allocate_check_then_act("flat", f"i-{n}") for n in range(CONCURRENT)])
        failing += _duplicates(got) > 0
    assert failing > 0


def test_spop_pool_never_hands_out_duplicates():
    """Across 200 seeds the SPOP pool never gives one address twice (I1)."""
    for seed in SEEDS:
        rt, manager = _fresh(seed)
        ids = [f"i-{n}" for n in range(CONCURRENT)]
        run_all(rt, "setup", [_waiting_instance(i) for i in ids])
        got = run_all(rt, "net", [manager.allocate_fixed_ip(None, i, "flat") for i in ids])
        addresses = [g["address"] for g in got]
        assert _duplicates(addresses) == 0, f"seed {seed}: {addresses}"
        assert rt.store.client.scard(keys.available("flat")) == 253 - CONCURRENT


def test_spop_pool_exhaustion_leaks_nothing():
    """More allocations than addresses: the extras fail, and free + handed out = all."""
    random.seed(1)
    rt = runtime(1)
    manager = FlatManager(NetworkConfig(fixed_range="10.2.0.0/29"))
    run_all(rt, "setup", [manager.create_networks()])
    ids = [f"i-{n}" for n in range(9)]
    run_all(rt, "setup", [_waiting_instance(i) for i in ids])
    got = run_all(rt, "net", [manager.allocate_fixed_ip(None, i, "flat") for i in ids])
    assert sum(isinstance(g, dict) for g in got) == 5
    assert all(type(g).__name__ == "NoMoreAddresses" for g in got if not isinstance(g, dict))
    client = rt.store.client
    assert client.scard(keys.available("flat")) + client.scard(keys.network_fixedips("flat")) == 5
