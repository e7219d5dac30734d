"""VLANs without 802.1q: each VLAN its own untagged layer-2 segment.

Where the kernel lacks ``8021q`` (``LinuxNet.vlan_supported()`` is False) a
``run-scenario --mode real`` run still keeps every project's network apart at layer 2:
instead of tagging frames on the shared ``bridge_interface``, ``EnsureVlan(N)`` plugs
``vlan<N>``, a veth whose peer is a port of bridge ``v<N>`` in the run's fabric network
namespace (standing for the switch that would carry the tagged VLAN). Everything after
it is the usual linux_net work: ``br<N>`` enslaves ``vlan<N>``, the network host puts
the gateway on it and starts its dnsmasq. Only the tagging step is skipped, and the
first such step on each host says so in the log.
"""

from __future__ import annotations

import hashlib
import logging
import threading

from common.effects import EnsureVlan
from common.errors import NetworkDriverError
from real.linux_net.arguments import check_int
from real.linux_net.commands import Commands

log = logging.getLogger(__name__)

#: Longest Linux interface name (IFNAMSIZ - 1).
IFNAME_MAX = 15


def segment_bridge(vlan: int) -> str:
    """The fabric's bridge standing for VLAN ``vlan``."""
    return f"v{vlan}"


def peer_name(host: str, vlan: int) -> str:
    """The fabric end of ``host``'s link to VLAN ``vlan``: ``<host>.<vlan>`` when that
    fits an interface name, else a digest of it."""
    name = f"{host}.{vlan}"
    if len(name) <= IFNAME_MAX:
        return name
    return f"s{hashlib.sha256(name.encode()).hexdigest()[:8]}.{vlan}"


class UntaggedVlans:
    """A network driver (``perform(effect)``) that does ``EnsureVlan`` as above and
    hands every other effect to ``inner`` (a LinuxNet working in namespace
    ``namespace``). ``fabric``: the namespace holding the segment bridges; ``host``:
    names this host's ports there."""

    def __init__(self, inner, namespace: str | None, fabric: str, host: str, *, timeout: float = 30.0):
        self.inner = inner
        self.fabric = fabric
        self.host = host
        self._own = Commands(namespace, timeout)
        self._fabric = Commands(fabric, timeout)
        self._lock = threading.Lock()
        self._said = False

    def __repr__(self):
        return f"UntaggedVlans({self.inner!r}, fabric={self.fabric!r})"

    def perform(self, effect):
        if type(effect) is EnsureVlan:
            return self.ensure_vlan(effect.vlan, effect.interface)
        return self.inner.perform(effect)

    def ensure_vlan(self, vlan, interface) -> str:
        """Plug ``vlan<N>`` into the fabric's segment ``v<N>`` (if not yet) and bring it
        up; returns ``vlan<N>``. ``interface`` (the trunk a tag would go on) is unused.

        Failure: NetworkDriverError when a link ``vlan<N>`` exists but is no veth, or an
        ``ip`` command fails.
        """
        vlan = check_int(vlan, "vlan", 1, 4094)
        name = f"vlan{vlan}"
        with self._lock:
            link = self._own.link(name)
            if link is None:
                self._ensure_segment(vlan)
                peer = peer_name(self.host, vlan)
                self._own.ip("link", "add", name, "type", "veth", "peer", "name", peer, "netns", self.fabric)
                self._fabric.ip("link", "set", "dev", peer, "master", segment_bridge(vlan), "up")
                if not self._said:
                    self._said = True
                    log.warning("802.1q tagging skipped (this kernel has no 8021q): %s is an untagged link to "
                                "VLAN %d's own segment %s in %s instead of a tagged interface on %s",
                                name, vlan, segment_bridge(vlan), self.fabric, interface)
            elif link.get("linkinfo", {}).get("info_kind") != "veth":
                raise NetworkDriverError(f"{name} exists but is not the veth to VLAN {vlan}'s segment: "
                                         f"{link.get('linkinfo', link)}")
            self._own.ip("link", "set", "dev", name, "up")
            return name

    def _ensure_segment(self, vlan: int):
        bridge = segment_bridge(vlan)
        if self._fabric.link(bridge) is None:
            made = self._fabric.ip("link", "add", "name", bridge, "type", "bridge", "forward_delay", "0",
                                   "stp_state", "0", check=False)
            # Another host's daemon may have made it a moment ago: that is as good.
            if made.returncode != 0 and self._fabric.link(bridge) is None:
                raise self._fabric.error(made)
        self._fabric.ip("link", "set", "dev", bridge, "up")

    def vlan_supported(self) -> bool:
        return self.inner.vlan_supported()
