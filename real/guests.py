"""Guest ends: what a booted instance would put on its network, for hypervisors that
plug nothing (libvirt's test driver).

A compute daemon configured with ``guest_ends`` (``run-scenario --mode real`` with a
DHCP manager does it) wraps its hypervisor in ``GuestEnds``. After a domain is spawned
on a bridge it plugs, as libvirt plugs a tap:

* network namespace ``<guest_ends>-<instance>`` (the guest), its loopback up;
* a veth ``tap<id>`` in the compute host's namespace, a port of the instance's bridge,
  whose peer ``eth0`` in the guest has the instance's MAC address;
* ``busybox udhcpc`` on ``eth0`` in the guest, as the guest's DHCP client: it asks
  the network host's dnsmasq, configures the address and default route it is given and
  appends each lease to ``<net_state_dir>/guests/<instance>.lease``.

Destroying the domain unplugs it: the DHCP client is killed (a destroyed machine sends
no release) and the guest namespace, with its veth, deleted. ``<instance>.json`` beside
the lease records the guest (MAC, bridge, host, when plugged and unplugged).

``read_guests(directories)`` is the run's side: every guest recorded there with its
leases, for the audit (real.run_network_audit).

A guest end that cannot be plugged fails the spawn (HypervisorError) and leaves no
domain, as a tap libvirt cannot create does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from common.effects import DomainSpec
from common.errors import HypervisorError, NetworkDriverError
from real.linux_net.commands import Commands

#: The guest's interface (inside its own namespace, so the name is free).
GUEST_INTERFACE = "eth0"
#: udhcpc: a discover every second, 3 per round, 1 s between rounds, for ever (until
#: unplugged): the guest may ask before its address reaches dnsmasq's hosts file.
UDHCPC_OPTIONS = ("-f", "-t", "3", "-T", "1", "-A", "1")
#: Seconds the DHCP client gets to die after SIGKILL before we stop waiting for it.
KILL_WAIT = 5.0

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc's event script in a guest end (real.guests): configure the lease, record it.
case "$1" in
    deconfig) ip addr flush dev "$interface" scope global ;;
    bound|renew)
        ip addr flush dev "$interface" scope global
        ip addr add "$ip/$mask" dev "$interface"
        gw=${router%% *}
        [ -n "$gw" ] && ip route replace default via "$gw" dev "$interface"
        echo "$1 $ip/$mask ${gw:--} $(date +%s)" >> "$NOVALAB_LEASE" ;;
esac
exit 0
"""


def tap_name(instance_id: str) -> str:
    """The compute host's end of an instance's guest end (<= 15 characters)."""
    return "tap" + instance_id.removeprefix("i-")[:12]


class GuestEnds:
    """A HypervisorPerformer around ``inner`` that plugs and unplugs guest ends (module
    docstring). ``host_netns``: the compute host's namespace (its bridges are there);
    ``prefix``: of the guests' namespaces; ``state_dir``: ``<net_state_dir>``."""

    def __init__(self, inner, host: str, host_netns: str | None, prefix: str, state_dir, *, timeout: float = 30.0):
        self.inner = inner
        self.host = host
        self.prefix = prefix
        self.directory = Path(state_dir) / "guests"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.script = self.directory / "udhcpc.sh"
        self.script.write_text(UDHCPC_SCRIPT)
        self.script.chmod(0o755)
        self._root = Commands(None, timeout)
        self._host = Commands(host_netns, timeout)
        self._clients: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name):  # close(), connection(), ...: the hypervisor's own
        return getattr(self.inner, name)

    def namespace(self, instance_id: str) -> str:
        return f"{self.prefix}-{instance_id}"

    # -- HypervisorPerformer -----------------------------------------------------

    def spawn(self, spec: DomainSpec) -> None:
        self.inner.spawn(spec)
        if not spec.bridge or not spec.mac_address:
            return
        try:
            self.plug(spec.name, spec.mac_address, spec.bridge)
        except NetworkDriverError as e:
            self.unplug(spec.name)
            self.inner.destroy(spec.name)
            raise HypervisorError(f"cannot plug {spec.name} into {spec.bridge} on {self.host}: {e}") from None

    def destroy(self, name: str) -> bool:
        existed = self.inner.destroy(name)
        self.unplug(name)
        return existed

    def reboot(self, name: str) -> None:
        self.inner.reboot(name)

    def info(self, name: str) -> dict[str, Any] | None:
        return self.inner.info(name)

    def names(self) -> tuple[str, ...]:
        return self.inner.names()

    # -- plugging ------------------------------------------------------------------

    def plug(self, instance_id: str, mac: str, bridge: str):
        """Make the guest end of ``instance_id`` on ``bridge`` and start its DHCP client
        (a guest end left by an earlier spawn of the same name is replaced)."""
        guest, tap = self.namespace(instance_id), tap_name(instance_id)
        if self._exists(guest):
            self.unplug(instance_id)
        plugged_at = time.time()
        self._root.ip("netns", "add", guest)
        self._root.ip("-n", guest, "link", "set", "lo", "up")
        self._host.ip("link", "add", tap, "type", "veth", "peer", "name", GUEST_INTERFACE, "netns", guest)
        self._root.ip("-n", guest, "link", "set", GUEST_INTERFACE, "address", mac, "up")
        self._host.ip("link", "set", "dev", tap, "master", bridge, "up")
        lease = self.directory / f"{instance_id}.lease"
        env = {"PATH": os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]), "NOVALAB_LEASE": str(lease)}
        argv = [self._root.tool("ip"), "netns", "exec", guest, self._root.tool("busybox"), "udhcpc",
                "-i", GUEST_INTERFACE, "-s", str(self.script), *UDHCPC_OPTIONS]
        with open(self.directory / f"{instance_id}.log", "ab") as out:
            try:
                client = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True)
            except OSError as e:
                raise NetworkDriverError(f"cannot start the DHCP client of {instance_id}: {e}") from None
        with self._lock:
            self._clients[instance_id] = client
        self._write(instance_id, {"instance": instance_id, "mac": mac, "bridge": bridge, "host": self.host,
                                  "netns": guest, "tap": tap, "plugged_at": plugged_at})

    def unplug(self, instance_id: str):
        """Kill the guest's DHCP client and delete its namespace (and so its veth);
        nothing to unplug is success."""
        guest = self.namespace(instance_id)
        with self._lock:
            client = self._clients.pop(instance_id, None)
        if self._exists(guest):
            for pid in _namespace_pids(self._root, guest):
                _kill(pid)
            self._root.ip("netns", "del", guest, check=False)
            path = self.directory / f"{instance_id}.json"
            if path.exists():
                record = json.loads(path.read_text())
                self._write(instance_id, {**record, "unplugged_at": time.time()})
        if client is not None:
            client.kill()
            try:
                client.wait(KILL_WAIT)
            except subprocess.TimeoutExpired:
                pass

    def _exists(self, guest: str) -> bool:
        return os.path.exists(os.path.join("/run/netns", guest))

    def _write(self, instance_id: str, record: dict):
        path = self.directory / f"{instance_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, sort_keys=True))
        os.replace(tmp, path)


def _namespace_pids(run: Commands, namespace: str) -> list[int]:
    result = run.ip("netns", "pids", namespace, check=False)
    return [int(word) for word in result.stdout.split() if word.isdigit()]


def _kill(pid: int):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def read_guests(directories) -> list[dict]:
    """Every guest end recorded under ``<directory>/guests`` of ``directories``, each its
    record plus ``leases``: [(event, address/prefix, router, unix time)] in order."""
    found = []
    for directory in directories:
        for path in sorted((Path(directory) / "guests").glob("*.json")):
            record = json.loads(path.read_text())
            leases = []
            lease_file = path.with_suffix(".lease")
            if lease_file.exists():
                for line in lease_file.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 4:
                        leases.append((parts[0], parts[1], parts[2], float(parts[3])))
            found.append({**record, "leases": leases})
    return found
