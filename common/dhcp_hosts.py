"""A network's dnsmasq hosts file, built whole from the store's ``dhcphosts`` hash.

2010 rewrote the whole file on every change, and so do we (``common.network``). A busy
network is rewritten every second with thousands of lines, most the same as last time,
so a ``HostsFile`` keeps each address's order key and line from one rewrite to the
next: its memory is bounded by the addresses of the networks its host serves.
"""

from __future__ import annotations

import ipaddress

from common.effects import DhcpHost


class HostsFile:
    """Builds hosts files; one per network manager (a service's lifetime)."""

    def __init__(self) -> None:
        self._lines: dict[str, tuple[str, DhcpHost]] = {}
        self._order = _AddressOrder()

    def hosts(self, lines: dict[str, str]) -> tuple[DhcpHost, ...]:
        """``lines`` (address -> ``mac,hostname``) as hosts in numeric address order."""
        known = self._lines
        hosts = []
        for address in sorted(lines, key=self._order.__getitem__):
            value = lines[address]
            entry = known.get(address)
            if entry is None or entry[0] != value:
                mac, _, hostname = value.partition(",")
                entry = known[address] = (value, DhcpHost(mac, hostname, address))
            hosts.append(entry[1])
        return tuple(hosts)


class _AddressOrder(dict):
    """address -> its numeric order as one int (IPv4 before IPv6), computed once per
    address, without ``ipaddress``'s cost for IPv4: ints compare faster than tuples."""

    def __missing__(self, address: str) -> int:
        parts = address.split(".")
        if len(parts) == 4:
            a, b, c, d = map(int, parts)
            key = (a << 24) | (b << 16) | (c << 8) | d
        else:
            key = (1 << 128) + int(ipaddress.ip_address(address))
        self[address] = key
        return key
