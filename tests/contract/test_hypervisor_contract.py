"""The hypervisor contract: one set of test bodies, run against the fake and libvirt.

``hv`` is either the SimPy fake (``sim.hypervisor.FakeHypervisor``) behind a blocking
adapter, or ``real.libvirt_driver.LibvirtDriver`` on a private libvirt test hypervisor
(``test:///<node file>``, a fresh one per test). Both have the same capacity, so the
same memory requests fit or do not fit on both. The bodies check what the effects'
docstrings in ``common.effects`` promise (Spawn, Destroy, Reboot, GetInfo, ListDomains).

The libvirt-only tests at the end check what only the real driver has: the domain XML,
the instance directory, the private test hypervisors and connection errors.
"""

from __future__ import annotations

import os
import random
import xml.etree.ElementTree as ET

import pytest
import simpy
from conftest import service_unavailable

from common.effects import DomainSpec
from common.errors import HypervisorError, InsufficientMemory
from common.scenario import Hypervisor as HypervisorTiming
from sim.hypervisor import FakeHypervisor

HOST = "compute-1"
VCPUS = 4
MEMORY_MB = 4096  # the fake's capacity and the libvirt test node's memory


def spec(name="i-00000001", memory_mb=512, vcpus=1, **kw) -> DomainSpec:
    return DomainSpec(name=name, vcpus=vcpus, memory_mb=memory_mb, **kw)


class BlockingFake:
    """The fake hypervisor with blocking methods: each SimPy generator runs in a fresh
    ``simpy.Environment``, stepped until its process is done."""

    def __init__(self):
        self.fake = FakeHypervisor(
            simpy.Environment(), HOST, VCPUS, MEMORY_MB, HypervisorTiming(), random.Random(1)
        )

    def _run(self, generator):
        env = simpy.Environment()
        self.fake.env = env
        process = env.process(generator)
        while not process.triggered:
            env.step()
        process.defused = True  # we take the outcome ourselves
        if not process.ok:
            raise process.value
        return process.value

    def spawn(self, domain_spec):
        return self._run(self.fake.spawn(domain_spec))

    def destroy(self, name):
        return self._run(self.fake.destroy(name))

    def reboot(self, name):
        return self._run(self.fake.reboot(name))

    def info(self, name):
        return self.fake.info(name)

    def names(self):
        return self.fake.names()

    def arrange_boot_failure(self, monkeypatch):
        """Make the next boot fail part-way, the fake's own fault model."""
        monkeypatch.setattr(self.fake, "timing", HypervisorTiming(spawn_failure_probability=1.0))

    def close(self):
        pass


def open_libvirt(tmp_path, host=HOST, memory_mb=MEMORY_MB):
    """A LibvirtDriver on a private test hypervisor, or skip/fail when libvirt is missing."""
    try:
        import libvirt  # noqa: F401
    except ImportError as e:
        service_unavailable("libvirt", f"libvirt-python is not installed ({e}); run real/setup/libvirt.sh")
    from real.libvirt_driver import LibvirtDriver

    try:
        uri = LibvirtDriver.test_uri_for_host(tmp_path / "nodes", host, vcpus=VCPUS, memory_mb=memory_mb)
        return LibvirtDriver(uri, instances_path=str(tmp_path / "instances"), poll_interval=0.01)
    except HypervisorError as e:
        service_unavailable("libvirt", str(e))


def arrange_libvirt_boot_failure(driver, monkeypatch):
    """The test hypervisor boots every domain at once; make the domain die instead,
    right after it was defined and created, so the driver has a real domain to clean."""
    real_wait = driver._wait_running

    def die_while_booting(dom, name, what):
        dom.destroy()  # shut off after create: the wait must see it stop
        return real_wait(dom, name, what)

    monkeypatch.setattr(driver, "_wait_running", die_while_booting)


@pytest.fixture(params=["fake", "libvirt"])
def hv(request, tmp_path):
    if request.param == "fake":
        adapter = BlockingFake()
    else:
        adapter = open_libvirt(tmp_path)
        adapter.arrange_boot_failure = lambda mp: arrange_libvirt_boot_failure(adapter, mp)
    yield adapter
    adapter.close()


@pytest.fixture
def driver(tmp_path):
    d = open_libvirt(tmp_path)
    yield d
    d.close()


# ---------------------------------------------------------------------------------------
# The contract: the same bodies for both.


def test_spawn_runs_and_lists_the_domain(hv):
    """Spawn returns once running; info and names show the domain with its size."""
    assert hv.spawn(spec("i-1", memory_mb=512, vcpus=2)) is None
    assert hv.info("i-1") == {"state": "running", "vcpus": 2, "memory_mb": 512}
    assert "i-1" in hv.names()


def test_names_are_sorted(hv):
    for name in ("i-c", "i-a", "i-b"):
        hv.spawn(spec(name, memory_mb=256))
    assert hv.names() == ("i-a", "i-b", "i-c")


def test_info_of_missing_domain_is_none(hv):
    assert hv.info("i-missing") is None
    assert hv.names() == ()


def test_spawn_twice_raises_and_keeps_one_domain(hv):
    hv.spawn(spec("i-1"))
    with pytest.raises(HypervisorError, match="exists") as raised:
        hv.spawn(spec("i-1"))
    assert not isinstance(raised.value, InsufficientMemory)
    assert "i-1" in str(raised.value)
    assert hv.names() == ("i-1",)
    assert hv.info("i-1")["state"] == "running"


def test_destroy_returns_true_then_false(hv):
    hv.spawn(spec("i-1"))
    assert hv.destroy("i-1") is True
    assert hv.info("i-1") is None
    assert hv.names() == ()
    assert hv.destroy("i-1") is False


def test_destroy_missing_is_success(hv):
    assert hv.destroy("i-never") is False
    assert hv.names() == ()


def test_reboot_of_running_domain_stays_running(hv):
    hv.spawn(spec("i-1", memory_mb=1024, vcpus=2))
    assert hv.reboot("i-1") is None
    assert hv.info("i-1") == {"state": "running", "vcpus": 2, "memory_mb": 1024}
    assert hv.names() == ("i-1",)


def test_reboot_of_missing_domain_raises(hv):
    with pytest.raises(HypervisorError, match="i-missing"):
        hv.reboot("i-missing")
    assert hv.names() == ()


def test_memory_beyond_the_host_raises_insufficient_memory(hv):
    with pytest.raises(InsufficientMemory, match="i-big"):
        hv.spawn(spec("i-big", memory_mb=MEMORY_MB + 1))
    assert hv.names() == ()


def test_memory_is_not_overcommitted_and_is_released_by_destroy(hv):
    hv.spawn(spec("i-1", memory_mb=3072))
    with pytest.raises(InsufficientMemory):
        hv.spawn(spec("i-2", memory_mb=2048))
    assert hv.names() == ("i-1",)
    hv.spawn(spec("i-3", memory_mb=1024))  # exactly fills the host
    hv.destroy("i-1")
    hv.spawn(spec("i-2", memory_mb=2048))
    assert hv.names() == ("i-2", "i-3")


def test_failed_boot_leaves_no_domain(hv, monkeypatch):
    hv.spawn(spec("i-keep"))
    hv.arrange_boot_failure(monkeypatch)
    with pytest.raises(HypervisorError, match="i-fail"):
        hv.spawn(spec("i-fail", memory_mb=2048))
    assert hv.names() == ("i-keep",)
    assert hv.info("i-fail") is None
    monkeypatch.undo()
    hv.spawn(spec("i-fail", memory_mb=MEMORY_MB - 512))  # its memory was released
    assert hv.names() == ("i-fail", "i-keep")


def test_failed_spawn_for_memory_leaves_no_domain(hv):
    hv.spawn(spec("i-1", memory_mb=MEMORY_MB))
    with pytest.raises(InsufficientMemory):
        hv.spawn(spec("i-2", memory_mb=1))
    assert hv.names() == ("i-1",)
    assert hv.info("i-2") is None


# ---------------------------------------------------------------------------------------
# libvirt only.


def test_domain_xml_carries_the_spec(driver):
    s = spec(
        "i-x", memory_mb=2048, vcpus=3, disk_gb=10, mac_address="02:16:3e:12:34:56", bridge="br100", image_id="ami-1"
    )
    base = os.path.join(driver.instances_path, "i-x")
    root = ET.fromstring(driver.to_xml(s))
    assert root.tag == "domain" and root.findtext("name") == "i-x"
    memory = root.find("memory")
    assert memory.get("unit") == "KiB" and memory.text == str(2048 * 1024)
    assert root.findtext("vcpu") == "3"
    iface = root.find("devices/interface")
    assert iface.get("type") == "bridge"
    assert iface.find("source").get("bridge") == "br100"
    assert iface.find("mac").get("address") == "02:16:3e:12:34:56"
    assert root.find("devices/disk/source").get("file") == os.path.join(base, "disk")
    serial = root.find("devices/serial")
    assert serial.get("type") == "file"
    assert serial.find("source").get("path") == os.path.join(base, "console.log")


def test_domain_xml_without_bridge_or_disk_has_neither(driver):
    root = ET.fromstring(driver.to_xml(spec("i-x", disk_gb=0, mac_address="02:16:3e:12:34:56")))
    assert root.find("devices/interface") is None
    assert root.find("devices/disk") is None
    assert root.find("devices/serial") is not None


def test_libvirt_keeps_what_the_xml_said(driver):
    driver.spawn(
        spec("i-x", memory_mb=768, vcpus=2, disk_gb=1, mac_address="02:16:3e:aa:bb:cc", bridge="br42")
    )
    root = ET.fromstring(driver.connection.lookupByName("i-x").XMLDesc(0))
    assert root.find("devices/interface/mac").get("address") == "02:16:3e:aa:bb:cc"
    assert root.find("devices/interface/source").get("bridge") == "br42"
    assert root.find("memory").text == str(768 * 1024)
    assert root.find("devices/serial/source").get("path").endswith("/i-x/console.log")


def test_a_fetched_image_is_the_root_disk_in_libvirts_domain(driver):
    """With disk_image set, libvirt's own XML has vda on the cached image (shared, transient) and vdb the local disk."""
    driver.spawn(spec("i-x", disk_gb=1, image_id="ami-1", disk_image="ami-1"))
    disks = ET.fromstring(driver.connection.lookupByName("i-x").XMLDesc(0)).findall("devices/disk")
    assert [(d.find("target").get("dev"), d.find("source").get("file")) for d in disks] == [
        ("vda", os.path.join(driver.instances_path, "_base", "ami-1")),
        ("vdb", os.path.join(driver.instances_path, "i-x", "disk"))]
    assert disks[0].find("transient").get("shareBacking") == "yes"


def test_an_unsafe_image_id_is_refused(driver):
    """An image id that is not a plain name cannot point a disk outside the cache."""
    with pytest.raises(HypervisorError, match="not usable"):
        driver.spawn(spec("i-x", disk_image="../../etc/passwd"))
    assert driver.names() == ()


def test_spawn_makes_and_destroy_removes_the_instance_directory(driver):
    base = os.path.join(driver.instances_path, "i-x")
    driver.spawn(spec("i-x"))
    assert os.path.isfile(os.path.join(base, "libvirt.xml"))
    assert driver.destroy("i-x") is True
    assert not os.path.exists(base)


def test_spawn_rejected_by_libvirt_names_domain_and_cleans_up(driver):
    with pytest.raises(HypervisorError) as raised:
        driver.spawn(spec("i-bad", bridge="br100", mac_address="01:00:5e:00:00:01"))  # multicast
    message = str(raised.value)
    assert "i-bad" in message and driver.uri in message and "mac" in message.lower()
    assert driver.names() == ()
    assert not os.path.exists(os.path.join(driver.instances_path, "i-bad"))


def test_failed_boot_removes_the_instance_directory(driver, monkeypatch):
    arrange_libvirt_boot_failure(driver, monkeypatch)
    with pytest.raises(HypervisorError, match="stopped while booting"):
        driver.spawn(spec("i-fail"))
    assert driver.names() == ()
    assert not os.path.exists(os.path.join(driver.instances_path, "i-fail"))


def test_spawn_of_existing_domain_leaves_its_directory(driver):
    driver.spawn(spec("i-1"))
    with pytest.raises(HypervisorError, match="exists"):
        driver.spawn(spec("i-1"))
    assert os.path.isfile(os.path.join(driver.instances_path, "i-1", "libvirt.xml"))


def test_unsafe_name_is_refused(driver):
    with pytest.raises(HypervisorError, match="not usable"):
        driver.spawn(spec("../escape"))
    assert driver.names() == ()


def test_boot_timeout_raises_and_cleans_up(driver, monkeypatch):
    driver.boot_timeout = 0.05

    def never_running(dom, name, what):
        dom.suspend()  # paused: not running, not dead
        return real_wait(dom, name, what)

    real_wait = driver._wait_running
    monkeypatch.setattr(driver, "_wait_running", never_running)
    with pytest.raises(HypervisorError, match="not running after"):
        driver.spawn(spec("i-slow"))
    assert driver.names() == ()


def test_test_hypervisors_are_private_per_connection(tmp_path):
    """Two compute workers in one process: each driver has its own hypervisor, even on
    the same node file, with the node file's capacity."""
    a = open_libvirt(tmp_path / "a", host="compute-a", memory_mb=2048)
    b = open_libvirt(tmp_path / "b", host="compute-b", memory_mb=1024)
    same = open_libvirt(tmp_path / "a", host="compute-a", memory_mb=2048)
    try:
        a.spawn(spec("i-1", memory_mb=2048))
        assert a.names() == ("i-1",)
        assert b.names() == () and same.names() == ()
        b.spawn(spec("i-1", memory_mb=1024))  # the same name on another host is fine
        with pytest.raises(InsufficientMemory):
            b.spawn(spec("i-2", memory_mb=1))
        assert a.connection.getInfo()[1] == 2048 and b.connection.getInfo()[1] == 1024
    finally:
        for d in (a, b, same):
            d.close()


def test_unopenable_uri_names_uri_and_libvirt_message(tmp_path, driver):
    from real.libvirt_driver import LibvirtDriver

    uri = f"test://{tmp_path}/no-such-node.xml"
    with pytest.raises(HypervisorError) as raised:
        LibvirtDriver(uri, instances_path=str(tmp_path))
    assert uri in str(raised.value)
    assert "no-such-node.xml" in str(raised.value).split(uri, 1)[1]  # libvirt's own words


def test_closed_driver_raises(driver):
    driver.close()
    driver.close()  # idempotent
    with pytest.raises(HypervisorError, match="closed"):
        driver.names()
