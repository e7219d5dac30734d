"""sim/images.py: a per-host image cache that makes the first boot of an image on a host pay its transfer."""

import pytest
import simpy

from common import distributions
from common.effects import DomainSpec, FetchImage, Now, Spawn
from common.errors import ImageError
from common.scenario import Hypervisor, Timing
from sim import images
from sim.hypervisor import FakeHypervisor
from sim.recorder import Recorder
from sim.runtime import SimRuntime, stream
from sim.store import SimStore

SIZE = 2_000_000_000  # bytes
BANDWIDTH = 100_000_000  # bytes per second: 20 s for the image
BOOT = 5.0


def cloud(hosts=("h1", "h2"), latency=distributions.Constant(0.5)):
    """A runtime with a fixed-time fake hypervisor per host and the image cache installed."""
    env = simpy.Environment()
    timing = Timing(hypervisor=Hypervisor(boot_time=distributions.Constant(BOOT)))
    rt = SimRuntime(env, 1, SimStore(), None, timing, Recorder())
    cache = images.install(rt, BANDWIDTH, latency, stream(1, "images"))
    agents = {h: rt.agent(f"compute.{h}", h, FakeHypervisor(env, h, 64, 1 << 20, timing.hypervisor, stream(1, h)))
              for h in hosts}
    return rt, cache, agents


def boot(name, image="ami-ubuntu"):
    """What run_instance does for the image: fetch it, then spawn; -> (fetched, seconds taken)."""
    started = yield Now()
    fetched = yield FetchImage(image, "imgs/ubuntu.img", SIZE)
    yield Spawn(DomainSpec(name, 1, 512, image_id=image))
    return fetched, (yield Now()) - started


def run(rt, *work):
    """Drive (agent, generator) pairs concurrently to the end; -> their results."""
    procs = [rt.start(agent, gen) for agent, gen in work]
    rt.env.run()
    return [p.value for p in procs]


def test_first_boot_on_a_host_pays_the_transfer_the_second_does_not():
    """The first boot waits size/bandwidth + latency for the image; a later one on the same host only boots."""
    rt, _cache, agents = cloud()
    (first,) = run(rt, (agents["h1"], boot("i-1")))
    (second,) = run(rt, (agents["h1"], boot("i-2")))
    assert first == (True, SIZE / BANDWIDTH + 0.5 + BOOT)
    assert second == (False, BOOT)


def test_another_host_pays_again():
    """The cache is per host: a second host fetches the image for itself."""
    rt, cache, agents = cloud()
    run(rt, (agents["h1"], boot("i-1")))
    (other,) = run(rt, (agents["h2"], boot("i-2")))
    assert other == (True, SIZE / BANDWIDTH + 0.5 + BOOT)
    assert cache.transfers == 2 and cache.bytes_transferred == 2 * SIZE


def test_concurrent_first_boots_on_one_host_share_one_transfer():
    """Two boots of a new image at once on one host transfer it once; the second waits for it."""
    rt, cache, agents = cloud()
    results = run(rt, (agents["h1"], boot("i-1")), (agents["h1"], boot("i-2")))
    assert sorted(fetched for fetched, _ in results) == [False, True]
    assert all(took == SIZE / BANDWIDTH + 0.5 + BOOT for _, took in results)
    assert (cache.transfers, cache.waits) == (1, 1)


def test_latency_is_drawn_from_the_seeded_stream():
    """With a random latency two runs of one seed take the same time."""
    rt1, _, a1 = cloud(latency=distributions.Uniform(0.1, 3.0))
    rt2, _, a2 = cloud(latency=distributions.Uniform(0.1, 3.0))
    assert run(rt1, (a1["h1"], boot("i-1"))) == run(rt2, (a2["h1"], boot("i-1")))


def test_negative_size_is_an_image_error():
    """A record with a negative size raises ImageError into the manager."""
    rt, _, agents = cloud()

    def work():
        try:
            yield FetchImage("ami-x", "b/k", -1)
        except ImageError:
            return "refused"

    assert run(rt, (agents["h1"], work())) == ["refused"]


def test_bandwidth_must_be_positive():
    """install refuses a zero bandwidth."""
    env = simpy.Environment()
    rt = SimRuntime(env, 1, SimStore(), None, Timing(), Recorder())
    with pytest.raises(ValueError):
        images.install(rt, 0, 0.0, stream(1, "images"))
