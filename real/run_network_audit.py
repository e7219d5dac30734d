"""Checking a run's real network against the manager's records (real.run_network).

* While the workload runs, ``FloatingProbe`` pings every associated floating address
  from the fabric's outside address once its guest holds a lease: the ping crosses the
  network host's DNAT (PREROUTING), its FORWARD rules and bridge, the fabric and the
  compute host's bridge to the guest, and the reply comes back through its route and
  the connection's reverse NAT.
* After the drain, ``audit`` gives one verdict, ``NET``, from what the guests' DHCP
  clients recorded (real.guests) and what the namespaces hold:

  - each lease a guest took is its instance's ``fixed_ip`` with its network's gateway
    as the router (and the guest has the instance's MAC);
  - a guest has an instance record, unless a store loss took it (counted as
    ``guests_lost_with_store``: I3 checks that its domain did not outlive it);
  - a guest that lived ``LEASE_PATIENCE`` wall seconds got a lease;
  - dnsmasq's lease hook reached a network host (``lease_fixed_ip`` handled) when
    any guest leased;
  - the floating addresses bound on each network host's public interface are the
    associated ones of its records;
  - every probe of a floating address still associated reached its guest.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import threading
import time
from pathlib import Path

from common import assembly, keys
from common.effects import HGetAll, SMembers, ZRangeByScore
from common.invariants import MAX_VIOLATIONS, Verdict
from real.guests import read_guests
from real.linux_net.commands import Commands

#: Wall seconds a guest may go without a lease: it asks every second, and dnsmasq
#: knows its address once the network host ran setup_fixed_ip (usually before the
#: spawn); the rest is room for a loaded machine.
LEASE_PATIENCE = 15.0
#: Wall seconds between two looks for newly associated floating addresses.
PROBE_POLL = 0.5
#: Pings (1 s each) per floating address before it counts as unreachable: its rules may
#: land a moment after the records say it is associated.
PROBE_TRIES = 3


def _lease_addresses(guests) -> dict[str, str]:
    """address -> instance, from the guests' latest leases."""
    found = {}
    for guest in guests:
        if guest["leases"]:
            found[guest["leases"][-1][1].split("/")[0]] = guest["instance"]
    return found


class FloatingProbe:
    """The probing thread (module docstring); ``stop()`` ends it and returns the results."""

    def __init__(self, network, store):
        self.network = network
        self.store = store
        self.reached: list[str] = []
        self.failed: list[str] = []
        self.gone = 0  # disassociated before a probe got through
        self._done: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._fabric = Commands(network.fabric, timeout=10.0)
        self._thread = threading.Thread(target=self._loop, name="floating-probe", daemon=True)

    def start(self) -> FloatingProbe:
        self._thread.start()
        return self

    def stop(self) -> FloatingProbe:
        self._stop.set()
        self._thread.join(PROBE_TRIES * 2 + 5)
        return self

    def _associated(self) -> dict[str, str]:
        host = assembly.FLOATING_HOST
        every = self.store.execute(SMembers(keys.floating_addresses(host)))
        free = [a for a, _ in self.store.execute(ZRangeByScore(keys.floating_available(host), "-inf", "+inf"))]
        found = {}
        for address in sorted(set(every) - set(free)):
            record = self.store.execute(HGetAll(keys.floatingip(address)))
            if record.get("fixed_ip"):
                found[address] = record["fixed_ip"]
        return found

    def _loop(self):
        while not self._stop.wait(PROBE_POLL):
            try:
                associated = self._associated()
            except Exception:  # the store away for a moment: look again next time
                continue
            leased = _lease_addresses(read_guests(self.network.state_dir(h) for h in self.network.hosts))
            for address, fixed in associated.items():
                if (address, fixed) in self._done or fixed not in leased or self._stop.is_set():
                    continue
                self._done.add((address, fixed))
                self._probe(address, fixed, leased[fixed])

    def _probe(self, address: str, fixed: str, instance: str):
        ping = [self._fabric.tool("busybox"), "ping", "-c", "1", "-W", "1", address]
        for _ in range(PROBE_TRIES):
            if self._fabric.run(ping, check=False).returncode == 0:
                self.reached.append(address)
                return
        try:
            still = self.store.execute(HGetAll(keys.floatingip(address))).get("fixed_ip") == fixed
        except Exception:
            still = True  # cannot tell: count it against us rather than hide it
        if still:
            self.failed.append(f"floating {address} -> {fixed} ({instance}) did not answer {PROBE_TRIES} pings "
                               "from the outside while associated")
        else:
            self.gone += 1


def _lease_events(logs: Path) -> int:
    count = 0
    for path in logs.glob("rpc-network-*.csv"):
        with open(path, newline="") as f:
            count += sum(1 for row in csv.reader(f) if len(row) > 2 and row[2] == "lease_fixed_ip")
    return count


def _guest_violations(guests, store, now: float) -> tuple[list[str], int, int]:
    """-> (violations, guests leased, guests whose record a store loss took)."""
    violations, leased, lost = [], 0, 0
    # After a store loss records are not rebuilt (common.recovery), so a guest without
    # one is not checked here; I3 checks that no domain outlived its record.
    store_lost = bool((store.get(keys.RECOVERED) or {}).get("losses_noticed"))
    for guest in guests:
        iid, where = guest["instance"], guest["host"]
        record = store.get(f"instance:{iid}")
        if not isinstance(record, dict):
            if store_lost:
                lost += 1
            else:
                violations.append(f"guest {iid} on {where} has no instance record")
            continue
        if record.get("mac_address") != guest["mac"]:
            violations.append(f"guest {iid} on {where} has MAC {guest['mac']}, its record {record.get('mac_address')}")
        addresses = {lease[1].split("/")[0] for lease in guest["leases"]}
        routers = {lease[2] for lease in guest["leases"]}
        expected = record.get("fixed_ip", "")
        network = store.get(f"network:{record.get('network_id', '')}")
        gateway = network.get("gateway", "") if isinstance(network, dict) else ""
        leased += bool(addresses)
        wrong = addresses - {expected}
        lived = guest.get("unplugged_at", now) - guest["plugged_at"]
        if wrong:
            violations.append(f"guest {iid} on {where} leased {', '.join(sorted(wrong))} "
                              f"but its record holds {expected or 'no address'}")
        if routers - {gateway}:
            violations.append(f"guest {iid} on {where} was given router {', '.join(sorted(routers - {gateway}))}, "
                              f"not its network's gateway {gateway or '(none recorded)'}")
        elif not addresses and lived >= LEASE_PATIENCE:
            violations.append(f"guest {iid} on {where} got no DHCP lease in {lived:.0f} s")
    return violations, leased, lost


def _bound_violations(network, store) -> list[str]:
    """Floating addresses on the public interfaces against the associated records."""
    if network.public_interface == network.bridge_interface:
        return []
    violations = []
    for host in network.network_hosts:
        public = Commands(network.namespace(host)).ip("-4", "-o", "addr", "show", "dev", network.public_interface)
        bound = {ipaddress.ip_interface(word).ip.exploded for line in public.stdout.splitlines()
                 for word in line.split()[3:4] if word.endswith("/32")}
        expected = {record["address"] for key, record in store.items()
                    if key.startswith("floatingip:") and isinstance(record, dict)
                    and record.get("host") == host and record.get("instance_id")}
        for address in sorted(bound - expected):
            violations.append(f"floating {address} is bound on {host}'s {network.public_interface} "
                              "but associated with nothing")
        for address in sorted(expected - bound):
            violations.append(f"floating {address} is associated but not bound on {host}'s {network.public_interface}")
    return violations


def audit(network, store, logs: Path, probe: FloatingProbe | None) -> tuple[Verdict, dict]:
    """The ``NET`` verdict and the summary's ``network`` entry (module docstring)."""
    guests = read_guests(network.state_dir(h) for h in network.hosts)
    violations, leased, lost = _guest_violations(guests, store, time.time())
    events = _lease_events(logs)
    if leased and not events:
        violations.append(f"{leased} guests leased but no network host heard of a lease: dnsmasq's hook "
                          "(novalab dhcpbridge) did not get through")
    violations += _bound_violations(network, store)
    skipped = list(network.skipped)
    if probe is not None:
        violations += probe.failed
    if network.public_interface == network.bridge_interface:
        skipped.append({"step": "floating address probes from the outside",
                        "reason": f"public_interface is the bridge_interface ({network.bridge_interface}): "
                                  "no public segment of its own to probe from"})
    shown = violations[:MAX_VIOLATIONS] + ([f"... and {len(violations) - MAX_VIOLATIONS} more"]
                                          if len(violations) > MAX_VIOLATIONS else [])
    verdict = Verdict(name="NET", title="guests lease their recorded addresses; floating addresses bound and NATed",
                      ok=not violations, violations=tuple(shown))
    report = {
        **network.describe(), "skipped": skipped,
        "guests": len(guests), "guests_leased": leased, "guests_lost_with_store": lost, "lease_events": events,
        "floating_probes": {"reached": len(probe.reached) if probe else 0, "failed": len(probe.failed) if probe else 0,
                            "disassociated_first": probe.gone if probe else 0},
    }
    return verdict, report


class Networking:
    """real.mode's one handle on the run's network: the namespaces, the probe and the
    audit for a DHCP manager, nothing at all for flat."""

    def __init__(self, scenario, roster, out: Path, active: bool = True):
        """``active`` false: the run's network is someone else's (a namespace the site's
        configuration names, or production's host network): nothing here."""
        from real.run_network import for_run

        self.network = for_run(scenario, roster) if active else None
        self.out = out
        self.probe: FloatingProbe | None = None
        self.verdicts: list[Verdict] = []
        self.report: dict | None = None

    def daemon_settings(self) -> dict:
        from real.run_network import daemon_settings

        return daemon_settings(self.network)

    def daemon_env(self, kind: str, host: str) -> dict:
        return self.network.daemon_env(kind, host) if self.network is not None else {}

    def start(self, store):
        """Build the namespaces (StartupError when it cannot) and start the probe."""
        if self.network is None:
            return
        self.network.create()
        (self.out / "network.json").write_text(json.dumps(self.network.describe(), indent=2, sort_keys=True))
        if self.network.public_interface != self.network.bridge_interface:
            self.probe = FloatingProbe(self.network, store).start()

    def audit(self, store_dump, logs: Path):
        if self.network is None:
            return
        if self.probe is not None:
            self.probe.stop()
        verdict, self.report = audit(self.network, store_dump, logs, self.probe)
        self.verdicts = [verdict]

    def stop(self):
        """Remove everything the run's network made (also after a failure)."""
        if self.probe is not None:
            self.probe.stop()
        if self.network is not None:
            self.network.remove()
