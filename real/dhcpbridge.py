"""``novalab dhcpbridge add|old|del MAC IP [HOSTNAME]``: dnsmasq's lease hook.

dnsmasq runs its ``--dhcp-script`` with the lease event; this casts it to the network
host serving the address, as 2010's nova-dhcpbridge did: ``add`` and ``old`` (a lease
seen again after a dnsmasq restart) become ``lease_fixed_ip``, ``del`` becomes
``release_fixed_ip``. The network host ignores an event whose MAC no longer holds the
address (a stale release must not free another instance's address). ``init`` (dnsmasq
asking for leases at start-up) prints nothing: leases are not kept across restarts.

Exit status: 0 when the event was handed on (or needs nothing), 2 for bad arguments or
an unreachable store or broker; dnsmasq logs a non-zero status and carries on.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import sys
from pathlib import Path

from common import keys, rpc
from common.context import SYSTEM
from common.effects import HGet
from common.errors import NovaError
from real import config as config_module
from real.startup import StartupError, connect, rpc_client

EVENTS = {"add": "lease_fixed_ip", "old": "lease_fixed_ip", "del": "release_fixed_ip"}


def add_parser(sub):
    parser = sub.add_parser("dhcpbridge", help="dnsmasq's --dhcp-script: cast lease events to the network host")
    parser.add_argument("--config", default=None, help="YAML configuration (NOVALAB_* variables override it)")
    parser.add_argument("action", help="add, old, del (or init)")
    parser.add_argument("mac", nargs="?", default="")
    parser.add_argument("address", nargs="?", default="")
    parser.add_argument("hostname", nargs="?", default="")


def run(args) -> int:
    if args.action == "init":
        return 0
    method = EVENTS.get(args.action)
    if method is None:
        print(f"novalab dhcpbridge: unknown action {args.action!r} (expected add, old, del or init)", file=sys.stderr)
        return 2
    try:
        ipaddress.ip_address(args.address)
    except ValueError:
        print(f"novalab dhcpbridge: {args.address!r} is not an IP address", file=sys.stderr)
        return 2
    try:
        config = config_module.load(args.config)
        store, _runtime = connect(config)
    except (config_module.ConfigError, StartupError) as e:
        print(f"novalab dhcpbridge: {e}", file=sys.stderr)
        return 2
    try:
        network_id = store.execute(HGet(keys.fixedip(args.address), "network_id"))
        if not network_id:
            return 0  # not an address we handed out (or already reclaimed): nothing to tell
        host = store.execute(HGet(keys.network(network_id), "host"))
        if not host:
            return 0
        client = rpc_client(config)
        try:
            client.cast(rpc.host_topic("network", host), method, {"mac": args.mac, "address": args.address}, SYSTEM)
        finally:
            client.close()
    except NovaError as e:
        print(f"novalab dhcpbridge: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0


def write_hook(config) -> str:
    """The executable dnsmasq calls (it takes one path, no arguments): a script running
    ``novalab dhcpbridge`` with a copy of this daemon's configuration beside it.

    With ``netns`` set dnsmasq, and so the hook, runs in that namespace, where the
    store and broker (on this daemon's network, often 127.0.0.1) are out of reach: the
    hook first enters this daemon's own network namespace (``nsenter``; dnsmasq runs
    its script as root)."""
    import yaml

    state = Path(config.net_state_dir)
    state.mkdir(parents=True, exist_ok=True)
    settings = state / "dhcpbridge.yaml"
    settings.write_text(yaml.safe_dump(config.model_dump(), sort_keys=True))
    settings.chmod(0o600)  # it names the store and broker
    path = state / "novalab-dhcpbridge"
    enter = f"{_nsenter()} --net={_own_netns()} " if config.netns else ""
    # From this checkout, whatever directory dnsmasq calls it in.
    root = shlex.quote(str(Path(__file__).resolve().parents[1]))
    path.write_text(f'#!/bin/sh\ncd {root} || exit 2\n'
                    f'exec {enter}{sys.executable} -m real.cli dhcpbridge --config {settings} "$@"\n')
    path.chmod(0o755)
    return str(path)


def _own_netns() -> str:
    """A path naming this process's network namespace for as long as it matters:
    init's when we share it (it outlives any daemon), else our own process's (the hook
    is rewritten when the daemon starts again)."""
    try:
        if os.stat("/proc/1/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
            return "/proc/1/ns/net"
    except OSError:  # /proc/1 may not be ours to look at
        pass
    return f"/proc/{os.getpid()}/ns/net"


def _nsenter() -> str:
    path = shutil.which("nsenter", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if path is None:
        raise StartupError("`nsenter` (util-linux) is not installed: the DHCP hook cannot leave the namespace")
    return path
