"""Images in whole simulated runs: the default images registered from their objects,
the first launch on a host paying the transfer, the host's cache making the next one
faster."""

from common import images
from common.scenario import Scenario
from sim.run import Simulation, simulate

MIB = 1024 * 1024
BOOT = 5.0
SIZE_MB = 200
BANDWIDTH = 20.0  # MiB/s: 10 s for the image
LATENCY = 0.5


def one_host(image_size_mb=SIZE_MB, requests=2):
    """One host, requests 100 s apart, fixed boot and fetch times, instances kept."""
    return Scenario.model_validate({
        "name": "images", "seed": 3,
        "cloud": {"hosts": {"count": 1, "vcpus": 8, "memory_mb": 16384}, "scheduler": "simple",
                  "image_size_mb": image_size_mb},
        "workload": {"arrivals": {"process": "constant", "rate": 0.01}, "requests": requests,
                     "instance_types": {"m1.tiny": 1}, "lifetime": None},
        "timing": {"hypervisor": {"boot_time": {"constant": BOOT}},
                   "image_fetch": {"bandwidth_mb_per_s": BANDWIDTH, "latency": {"constant": LATENCY}}},
    })


def times_to_running(result):
    """Seconds from request to running of each instance, in launch order."""
    launched = sorted(result.recorder.instances.values(), key=lambda entry: entry["scheduling"])
    return [entry["running"] - entry["scheduling"] for entry in launched]


def test_the_first_launch_on_a_host_pays_the_transfer_and_the_second_does_not():
    """Time to running of the first launch is longer by size/bandwidth + latency; one transfer in all."""
    result = simulate(one_host())
    first, second = times_to_running(result)
    assert abs((first - second) - (SIZE_MB / BANDWIDTH + LATENCY)) < 0.1
    assert second < BOOT + 1.0
    assert result.summary["image_transfers"] == 1
    assert result.summary["image_bytes_transferred"] == SIZE_MB * MIB


def test_without_image_sizes_nothing_is_fetched():
    """image_size_mb 0: the images are registered with no bytes and both launches only boot."""
    result = simulate(one_host(image_size_mb=0))
    assert all(t < BOOT + 1.0 for t in times_to_running(result))
    assert result.summary["image_transfers"] == 0


def test_the_default_images_are_registered_from_their_objects():
    """The run's registry holds each cloud image, public, of the system project, with the object's size and ETag."""
    sim = Simulation(one_host(requests=1), 3)
    result = sim.run()
    record = result.snapshot.store[images.image("ami-tiny")]
    _, size, etag = sim.image_cache.objects[images.default_location("ami-tiny")]
    assert (record["public"], record["size_bytes"], record["etag"]) == ("1", str(size), etag)
