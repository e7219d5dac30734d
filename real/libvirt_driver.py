"""The real hypervisor: a blocking libvirt driver that performs the hypervisor effects.

One ``LibvirtDriver`` per compute worker. Each method performs one effect of
``common.effects`` (``Spawn`` -> ``spawn``, ``Destroy`` -> ``destroy``, ``Reboot`` ->
``reboot``, ``GetInfo`` -> ``info``, ``ListDomains`` -> ``names``) with the same results
and errors as ``sim.hypervisor.FakeHypervisor``; ``tests/contract`` runs one set of test
bodies against both. Methods block (spawn and reboot for up to ``boot_timeout``
seconds), so the real runner calls them from worker threads.

*Features*

- Domain XML in the shape of the 2010 ``libvirt.qemu.xml.template`` (see ``to_xml``):
  name, memory in KiB, vCPUs; the root disk (``vda``) the cached image
  ``<instances_path>/_base/<spec.disk_image>`` when the compute host fetched one
  (real.images put it there), marked ``<transient shareBacking='yes'/>`` so a guest's
  writes go to a throw-away overlay and the host's domains share the base file; a
  virtio disk at ``<instances_path>/<name>/disk`` when ``disk_gb > 0`` (the next
  device after the image); a bridge interface on ``spec.bridge`` with ``spec.mac_address`` when a
  bridge is given, the serial console logged to ``<instances_path>/<name>/console.log``;
  ``image_id`` and ``disk_gb`` are kept in ``<metadata>`` (2010 kept the whole record in
  a ``<nova>`` element). The XML is also written to ``<name>/libvirt.xml`` as in 2010.
- spawn = define + create (a persistent domain), then poll the state every
  ``poll_interval`` (0.5 s, as in 2010) until RUNNING, at most ``boot_timeout`` seconds.
  Any failure destroys and undefines what this call made, removes the instance
  directory and raises ``HypervisorError`` naming the domain, the URI and libvirt's
  message.
- Memory is never overcommitted, like the fake: a spawn whose memory does not fit in the
  node's memory (``virNodeGetInfo``) minus the current memory of the active domains
  raises ``InsufficientMemory`` before anything is defined. A libvirt error that says it
  is out of memory (``VIR_ERR_NO_MEMORY``, "Cannot allocate memory") is also raised as
  ``InsufficientMemory``. vCPUs may be overcommitted.
- reboot = destroy + create, as 2010's ``reboot_instance`` (needs no guest cooperation),
  then the same wait for RUNNING.
- destroy = destroy (if active) + undefine + remove ``<instances_path>/<name>``; a
  missing domain is success.
- Thread-safe: libvirt connections may be shared by threads; a per-driver lock makes the
  memory check, define and create of one spawn atomic with respect to other spawns of
  the same driver (the boot wait runs outside the lock).
- A private in-process test hypervisor per driver: ``test_uri_for_host`` (see below).

*Not supported*

- Images are not copied, resized, partitioned or injected (2010's ``_create_image``):
  the root disk is the cached image itself behind a transient overlay (libvirt 7.4 and
  later with qemu; not tried here, only the test driver is installed). The
  ``<name>/disk`` of ``disk_gb > 0`` is only named in the XML, so on ``qemu:///system``
  such a spec fails to start unless something else put the disk there.
- Kernel/ramdisk direct boot, key and network injection, nwfilter security groups,
  volumes, console output retrieval, pause/suspend, migration, CPU/disk/interface stats.
- Memory accounting is per connection: domains of other connections on the same host
  (another process on ``qemu:///system``) are counted only once they run, so two
  processes spawning at the same instant can both pass the check.
- ``names()`` lists every domain on the connection, including ones novalab did not make.
- Reconnecting: a dropped connection makes every call raise ``HypervisorError``; make a
  new driver. (On a ``test:///`` URI a new connection starts empty.)
- Importing this module registers a no-op libvirt error handler for the whole process
  (``libvirt.registerErrorHandler``): otherwise libvirt prints every error, including the
  expected "Domain not found", to stderr. Errors still raise ``libvirtError``.

*Connection string*

``qemu:///system`` in production (root; Debian ``libvirt-daemon-system`` and
``qemu-system-x86`` installed and libvirtd running; not exercised by the tests, which
need no daemon: they check ``to_xml`` against libvirt's domain schema with
``virt-xml-validate`` instead, and define with ``validate`` on the test driver). Only
``production: true`` (real/site.py) opens a URI other than the test driver's. In CI and
tests, libvirt's in-process test driver, which needs no daemon:

- ``test:///default`` -- ONE hypervisor shared by every connection of the process:
  several compute workers in one process would see each other's domains. It also comes
  with a running domain named ``test`` that holds 2 GiB of the node's 3 GiB, so only
  1 GiB of domains fits and ``names()`` is never empty. Good for a quick look only.
- ``test:///<absolute path of a node XML file>`` -- every *connection* gets its own,
  private hypervisor loaded from the file: two connections, even to the same file, do
  not see each other's domains, and closing a connection discards its domains.
  (Checked with libvirt 9.0.0, Debian 12.) ``LibvirtDriver.test_uri_for_host(directory,
  host, vcpus, memory_mb)`` writes such a file with the host's size and returns its URI,
  so each simulated-for-real compute worker owns a hypervisor of the right capacity.

Install: ``real/setup/libvirt.sh`` (Debian ``libvirt-dev`` and ``pkg-config``, then
``pip install libvirt-python``).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import xml.etree.ElementTree as ET

from common.errors import HypervisorError, InsufficientMemory

try:  # libvirt-python is optional until real mode is used.
    import libvirt
except ImportError as _e:  # pragma: no cover - depends on the machine
    libvirt = None
    _IMPORT_ERROR = str(_e)
else:
    _IMPORT_ERROR = ""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

#: The directory under instances_path holding the host's cached images (2010's ``_base``;
#: not a domain name, which starts with a letter or digit).
IMAGE_CACHE_DIR = "_base"
#: Namespace of the ``<metadata>`` element the driver writes into each domain.
METADATA_NS = "https://novalab.invalid/xmlns/instance/1"

# A domain name becomes a directory name under instances_path: keep it to one safe
# path component.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")

# virDomainState -> the state names of info(). 2010's power_state.name() used
# pending/running/blocked/paused/shutdown/shutdown/crashed; "booting" (the fake's word)
# is reported for a domain this driver is spawning or rebooting that is not running yet.
_STATE_NAMES = {
    0: "pending",  # VIR_DOMAIN_NOSTATE
    1: "running",  # VIR_DOMAIN_RUNNING
    2: "blocked",  # VIR_DOMAIN_BLOCKED
    3: "paused",  # VIR_DOMAIN_PAUSED
    4: "shutdown",  # VIR_DOMAIN_SHUTDOWN (shutting down)
    5: "shutdown",  # VIR_DOMAIN_SHUTOFF
    6: "crashed",  # VIR_DOMAIN_CRASHED
    7: "suspended",  # VIR_DOMAIN_PMSUSPENDED
}
_RUNNING, _SHUTOFF, _CRASHED = 1, 5, 6
_BOOTING = "booting"


class LibvirtDriver:
    """Blocking hypervisor driver over one libvirt connection; a
    ``common.performers.HypervisorPerformer``.

    ``uri``: see the module docstring. ``instances_path``: directory holding one
    ``<name>/`` directory per domain (created when missing). ``boot_timeout``: seconds
    spawn and reboot wait for RUNNING. ``domain_type``: the ``<domain type=>``
    (2010's ``libvirt_type``; the test driver accepts ``kvm`` too). ``validate``: define
    each domain with ``VIR_DOMAIN_DEFINE_VALIDATE`` (libvirt checks it against its
    schema and refuses it, naming the problem, before anything is defined).

    The connection is opened here. Raises HypervisorError, naming the URI and libvirt's
    message, when libvirt-python is missing or the URI cannot be opened.
    """

    def __init__(
        self,
        uri: str = "qemu:///system",
        instances_path: str = "instances",
        *,
        boot_timeout: float = 300.0,
        poll_interval: float = 0.5,
        domain_type: str = "kvm",
        validate: bool = False,
    ):
        self.uri = uri
        self.instances_path = os.path.abspath(instances_path)
        self.boot_timeout = boot_timeout
        self.poll_interval = poll_interval
        self.domain_type = domain_type
        self.validate = validate
        self._lock = threading.Lock()
        self._booting: set[str] = set()
        self._conn = None
        if libvirt is None:
            raise HypervisorError(
                f"cannot open {uri}: libvirt-python is not installed ({_IMPORT_ERROR}); "
                "run real/setup/libvirt.sh"
            )
        try:
            self._conn = libvirt.open(uri)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"cannot open libvirt connection {uri}: {_message(e)}") from e
        if self._conn is None:  # very old bindings returned None instead of raising
            raise HypervisorError(f"cannot open libvirt connection {uri}")

    # -- test hypervisors ----------------------------------------------------------------

    @staticmethod
    def test_uri_for_host(directory, host: str, vcpus: int = 16, memory_mb: int = 32768) -> str:
        """Write a node description for ``host`` under ``directory`` and return its
        ``test:///`` URI.

        Every connection to that URI is a private, empty, in-process hypervisor with
        ``vcpus`` CPUs and ``memory_mb`` MiB (state is per connection, not per file, so
        calling this twice for one host is harmless). Raises OSError when the file
        cannot be written, ValueError for a host name that is not a file name or a
        non-positive size.
        """
        if not _NAME_RE.match(host):
            raise ValueError(f"host name {host!r} cannot name a file")
        if vcpus < 1 or memory_mb < 1:
            raise ValueError(f"host {host}: vcpus and memory_mb must be positive")
        node = ET.Element("node")
        cpu = ET.SubElement(node, "cpu")
        for tag, value in (
            ("mhz", 2000),
            ("model", "x86_64"),
            ("nodes", 1),
            ("sockets", 1),
            ("cores", vcpus),
            ("threads", 1),
        ):
            ET.SubElement(cpu, tag).text = str(value)
        ET.SubElement(node, "memory").text = str(memory_mb * 1024)  # KiB
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(os.path.abspath(directory), f"{host}.node.xml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(ET.tostring(node, encoding="unicode"))
        return "test://" + path

    # -- XML -------------------------------------------------------------------------------

    def instance_dir(self, name: str) -> str:
        """``<instances_path>/<name>``. Raises HypervisorError for an unsafe name."""
        _check_name(name)
        return os.path.join(self.instances_path, name)

    def image_path(self, image_id: str) -> str:
        """``<instances_path>/_base/<image_id>``: where the host's image cache keeps an
        image. Raises HypervisorError for an id that is not a safe file name."""
        _check_name(image_id)
        return os.path.join(self.instances_path, IMAGE_CACHE_DIR, image_id)

    def to_xml(self, spec) -> str:
        """The domain XML for a ``DomainSpec`` (a pure function of spec and settings).

        Raises HypervisorError for a name that is not a safe file name.
        """
        base = self.instance_dir(spec.name)
        domain = ET.Element("domain", type=self.domain_type)
        ET.SubElement(domain, "name").text = spec.name
        metadata = ET.SubElement(domain, "metadata")
        ET.register_namespace("novalab", METADATA_NS)
        instance = ET.SubElement(metadata, f"{{{METADATA_NS}}}instance")
        ET.SubElement(instance, f"{{{METADATA_NS}}}image").text = spec.image_id or ""
        ET.SubElement(instance, f"{{{METADATA_NS}}}disk_gb").text = str(spec.disk_gb)
        ET.SubElement(domain, "memory", unit="KiB").text = str(spec.memory_mb * 1024)
        ET.SubElement(domain, "currentMemory", unit="KiB").text = str(spec.memory_mb * 1024)
        ET.SubElement(domain, "vcpu").text = str(spec.vcpus)
        os_el = ET.SubElement(domain, "os")
        ET.SubElement(os_el, "type").text = "hvm"
        ET.SubElement(os_el, "boot", dev="hd")
        features = ET.SubElement(domain, "features")
        ET.SubElement(features, "acpi")
        ET.SubElement(domain, "on_poweroff").text = "destroy"
        ET.SubElement(domain, "on_reboot").text = "restart"
        ET.SubElement(domain, "on_crash").text = "destroy"
        devices = ET.SubElement(domain, "devices")
        disks = [(self.image_path(spec.disk_image), True)] if spec.disk_image else []
        if spec.disk_gb > 0:
            disks.append((os.path.join(base, "disk"), False))
        for index, (path, shared) in enumerate(disks):
            disk = ET.SubElement(devices, "disk", type="file", device="disk")
            ET.SubElement(disk, "source", file=path)
            ET.SubElement(disk, "target", dev=f"vd{'ab'[index]}", bus="virtio")
            if shared:
                ET.SubElement(disk, "transient", shareBacking="yes")
        if spec.bridge:
            iface = ET.SubElement(devices, "interface", type="bridge")
            ET.SubElement(iface, "source", bridge=spec.bridge)
            if spec.mac_address:
                ET.SubElement(iface, "mac", address=spec.mac_address)
        serial = ET.SubElement(devices, "serial", type="file")
        ET.SubElement(serial, "source", path=os.path.join(base, "console.log"))
        ET.SubElement(serial, "target", port="0")
        return ET.tostring(domain, encoding="unicode")

    # -- the effects -------------------------------------------------------------------------

    def spawn(self, spec) -> None:
        """Define and boot ``spec`` (a ``DomainSpec``); return once it is RUNNING.

        On failure nothing this call made is left behind (domain destroyed and
        undefined, instance directory removed) and it raises:

        - HypervisorError("domain <name> exists on <uri>") when a domain of that name is
          already defined (that domain is left alone);
        - InsufficientMemory when the memory does not fit (checked before defining) or
          libvirt reports it is out of memory;
        - HypervisorError naming the domain, the URI and libvirt's message when define
          or create fails, when the domain stops or vanishes while booting, or when it
          is not RUNNING within ``boot_timeout`` seconds.

        Not idempotent.
        """
        name = spec.name
        conn = self._connection()
        xml = self.to_xml(spec)
        base = self.instance_dir(name)
        context = f"spawn of domain {name} on {self.uri} failed"
        dom = None
        with self._lock:
            if self._lookup(name, "spawn") is not None:
                raise HypervisorError(f"domain {name} exists on {self.uri}")
            self._check_memory(spec)
            self._booting.add(name)
            try:
                os.makedirs(base, exist_ok=True)
                with open(os.path.join(base, "libvirt.xml"), "w", encoding="utf-8") as f:
                    f.write(xml)
                # validate: libvirt checks the XML against its RNG schema first (production).
                dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE) if self.validate \
                    else conn.defineXML(xml)
                dom.create()
            except Exception as e:
                self._booting.discard(name)
                if dom is None and _already_exists(e):  # defined elsewhere meanwhile
                    raise HypervisorError(f"domain {name} exists on {self.uri}") from e
                self._cleanup(dom, base)
                _reraise(e, context)
            except BaseException:
                self._booting.discard(name)
                self._cleanup(dom, base)
                raise
        try:
            self._wait_running(dom, name, "spawn")
        except BaseException as e:
            self._cleanup(dom, base)
            _reraise(e, context)
        finally:
            self._booting.discard(name)

    def destroy(self, name: str) -> bool:
        """Stop and undefine domain ``name`` and remove ``<instances_path>/<name>``.

        Returns True if the domain existed, False if it was already gone (success; the
        directory is still removed). Raises HypervisorError naming the domain, the URI
        and libvirt's message when libvirt refuses; the domain may then still exist.
        Idempotent.
        """
        base = self.instance_dir(name)
        dom = self._lookup(name, "destroy")
        existed = dom is not None
        if dom is not None:
            try:
                _stop(dom)
                _undefine(dom)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # gone meanwhile: fine
                    raise HypervisorError(
                        f"destroy of domain {name} on {self.uri} failed: {_message(e)}"
                    ) from e
        shutil.rmtree(base, ignore_errors=True)
        return existed

    def reboot(self, name: str) -> None:
        """Hard-restart domain ``name`` (destroy + create); return once it is RUNNING.

        Raises HypervisorError when the domain does not exist, and HypervisorError
        naming the domain, the URI and libvirt's message when the restart fails or the
        domain is not RUNNING within ``boot_timeout``; the domain stays defined (it may
        be shut off). Idempotent in outcome.
        """
        dom = self._lookup(name, "reboot")
        if dom is None:
            raise HypervisorError(f"no domain {name} on {self.uri}")
        self._booting.add(name)
        try:
            _stop(dom)
            dom.create()
            self._wait_running(dom, name, "reboot")
        except BaseException as e:
            _reraise(e, f"reboot of domain {name} on {self.uri} failed")
        finally:
            self._booting.discard(name)

    def info(self, name: str) -> dict | None:
        """-> {"state", "vcpus", "memory_mb"} of domain ``name``, or None when it does not
        exist.

        ``state`` is "running", "booting" (spawn or reboot in progress, not yet
        running), or libvirt's state otherwise: "pending", "blocked", "paused",
        "shutdown", "crashed", "suspended". ``memory_mb`` is the maximum memory. Raises
        HypervisorError naming the domain, the URI and libvirt's message when libvirt
        fails. Idempotent.
        """
        dom = self._lookup(name, "info")
        if dom is None:
            return None
        try:
            state, max_kib, _mem_kib, vcpus, _cpu_time = dom.info()
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise HypervisorError(f"info of domain {name} on {self.uri} failed: {_message(e)}") from e
        label = _STATE_NAMES.get(state, "pending")
        if state != _RUNNING and name in self._booting:
            label = _BOOTING
        return {"state": label, "vcpus": vcpus, "memory_mb": max_kib // 1024}

    def names(self) -> tuple[str, ...]:
        """-> sorted tuple of the names of all domains (defined or running) on the
        connection. Raises HypervisorError naming the URI and libvirt's message when
        libvirt fails. Idempotent."""
        conn = self._connection()
        try:
            return tuple(sorted(d.name() for d in conn.listAllDomains(0)))
        except libvirt.libvirtError as e:
            raise HypervisorError(f"listing domains on {self.uri} failed: {_message(e)}") from e

    def close(self) -> None:
        """Close the connection. Idempotent; never raises. Afterwards every method
        raises HypervisorError. On a ``test:///`` URI the domains are discarded."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def connection(self):
        """The underlying ``libvirt.virConnect`` (for inspection and tests)."""
        return self._connection()

    # -- helpers -------------------------------------------------------------------------------

    def _connection(self):
        conn = self._conn
        if conn is None:
            raise HypervisorError(f"libvirt connection {self.uri} is closed")
        return conn

    def _lookup(self, name: str, what: str):
        """The virDomain called ``name``, or None. Raises HypervisorError otherwise."""
        conn = self._connection()
        try:
            return conn.lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise HypervisorError(f"{what} of domain {name} on {self.uri} failed: {_message(e)}") from e

    def _check_memory(self, spec) -> None:
        conn = self._connection()
        try:
            node_mb = conn.getInfo()[1]
            used_kib = sum(
                d.info()[2] for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            )
        except libvirt.libvirtError as e:
            raise HypervisorError(
                f"spawn of domain {spec.name} on {self.uri} failed: cannot read memory use: {_message(e)}"
            ) from e
        free_mb = node_mb - used_kib // 1024
        if spec.memory_mb > free_mb:
            raise InsufficientMemory(
                f"{self.uri} has {free_mb} MB free, {spec.name} needs {spec.memory_mb} MB"
            )

    def _wait_running(self, dom, name: str, what: str) -> None:
        deadline = time.monotonic() + self.boot_timeout
        while True:
            try:
                state, _reason = dom.state()
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise HypervisorError(f"domain {name} was destroyed while booting on {self.uri}") from e
                raise
            if state == _RUNNING:
                return
            if state in (_SHUTOFF, _CRASHED):  # started, then died: it will not come up
                raise HypervisorError(
                    f"{what} of domain {name} on {self.uri}: it stopped while booting "
                    f"(state {_STATE_NAMES[state]})"
                )
            if time.monotonic() >= deadline:
                raise HypervisorError(
                    f"{what} of domain {name} on {self.uri}: not running after "
                    f"{self.boot_timeout:g} s (state {_STATE_NAMES.get(state, state)})"
                )
            time.sleep(self.poll_interval)

    def _cleanup(self, dom, base: str) -> None:
        """Best effort: destroy and undefine ``dom`` (if any), remove ``base``."""
        if dom is not None:
            for step in (_stop, _undefine):
                try:
                    step(dom)
                except libvirt.libvirtError:
                    pass
        shutil.rmtree(base, ignore_errors=True)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise HypervisorError(f"domain name {name!r} is not usable (letters, digits, _.:+- only)")


def _message(e) -> str:
    return e.get_error_message() or str(e)


def _is_out_of_memory(e) -> bool:
    if e.get_error_code() == libvirt.VIR_ERR_NO_MEMORY:
        return True
    text = _message(e).lower()
    return "cannot allocate memory" in text or "out of memory" in text


def _already_exists(e: BaseException) -> bool:
    return libvirt is not None and isinstance(e, libvirt.libvirtError) and "already exists" in _message(e)


def _reraise(e: BaseException, context: str):
    """Raise ``e`` as a HypervisorError (InsufficientMemory when libvirt ran out of
    memory) prefixed with ``context``. HypervisorErrors and BaseExceptions that are not
    Exceptions (KeyboardInterrupt) are re-raised unchanged."""
    if isinstance(e, HypervisorError) or not isinstance(e, Exception):
        raise e
    if libvirt is not None and isinstance(e, libvirt.libvirtError):
        cls = InsufficientMemory if _is_out_of_memory(e) else HypervisorError
        raise cls(f"{context}: {_message(e)}") from e
    raise HypervisorError(f"{context}: {type(e).__name__}: {e}") from e


def _stop(dom) -> None:
    """Destroy (hard stop) ``dom`` if it is active."""
    try:
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError as e:
        # "domain is not running": stopped between the check and the destroy.
        if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
            raise


def _undefine(dom) -> None:
    flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    try:
        dom.undefineFlags(flags)
    except libvirt.libvirtError as e:
        if e.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
            dom.undefine()
        else:
            raise
