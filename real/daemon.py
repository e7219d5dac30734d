"""The daemons an operator runs: ``novalab compute|network|scheduler``.

Each reads one configuration file (real.config), refuses to start with a clear message
when Redis or RabbitMQ cannot be reached, logs to stderr, and exits cleanly on SIGTERM
or SIGINT (in-flight messages finish, within a bound).
"""

from __future__ import annotations

import csv
import logging
import os
import signal
import sys
import threading
from typing import Any

from common import assembly, network
from common.effects import (
    BindFloating,
    EnsureBridge,
    EnsureFloatingForward,
    EnsureVlan,
    NetDriverEffect,
    RemoveFloatingForward,
    UnbindFloating,
)
from common.errors import HypervisorError, NetworkDriverError
from real import site
from real.config import DaemonConfig
from real.service import RealService
from real.startup import StartupError, connect

log = logging.getLogger("novalab")

KINDS = ("compute", "network", "scheduler")


def network_manager(config: DaemonConfig, host: str = ""):
    return network.make_manager(config.network_config(), host)


class FloatingRecordsOnly:
    """The network driver when ``bind_floating`` is false: floating-address effects
    (bind, unbind, NAT rules) are logged and count as done, so addresses are allocated,
    associated and released in the records only; every other effect goes to ``inner``
    (linux_net for the DHCP managers; none for flat, which yields no other effect)."""

    FLOATING = (BindFloating, UnbindFloating, EnsureFloatingForward, RemoveFloatingForward)

    def __init__(self, inner=None):
        self.inner = inner
        self.skipped = 0

    def perform(self, effect):
        if isinstance(effect, self.FLOATING):
            self.skipped += 1
            log.info("floating address not bound (bind_floating is false): %s", effect)
            return False
        if self.inner is None:
            raise NetworkDriverError(f"no network driver for {type(effect).__name__} (flat, bind_floating false)")
        return self.inner.perform(effect)


class NetworkRecordsOnly(FloatingRecordsOnly):
    """The network driver when ``net_records_only`` is true: no network effect is
    performed; each is logged and counts as done (an ensured VLAN interface is named
    ``vlan<N>``, as linux_net names it), so nothing of the machine is touched."""

    def perform(self, effect):
        if isinstance(effect, self.FLOATING):
            return super().perform(effect)
        if not isinstance(effect, NetDriverEffect):
            raise TypeError(f"not a network-driver effect: {effect!r}")
        self.skipped += 1
        log.info("network effect not performed (net_records_only): %s", effect)
        if isinstance(effect, EnsureVlan):
            return f"vlan{effect.vlan}"
        return effect.bridge if isinstance(effect, EnsureBridge) else None


def net_driver(config: DaemonConfig, host: str = ""):
    """linux_net for the DHCP managers and for flat's floating addresses (flat does no
    other network work); with ``bind_floating`` false floating addresses are records
    only (FloatingRecordsOnly); with ``net_records_only`` everything is
    (NetworkRecordsOnly); with ``untagged_vlans`` a VLAN is its own segment
    (real.linux_net.untagged)."""
    from real.linux_net import LinuxNet

    if config.net_records_only:
        return NetworkRecordsOnly()
    linux: Any = None
    if config.network_manager != network.FLAT:
        from real.dhcpbridge import write_hook

        hook = config.dhcpbridge or write_hook(config)  # dnsmasq's lease events come back to us
        linux = LinuxNet(config.net_state_dir, namespace=config.netns, dhcp_script=hook,
                         public_interface=config.public_interface)
    elif config.bind_floating:
        linux = LinuxNet(config.net_state_dir, namespace=config.netns, public_interface=config.public_interface)
    if linux is not None and config.untagged_vlans:
        from real.linux_net.untagged import UntaggedVlans

        linux = UntaggedVlans(linux, config.netns, config.untagged_vlans, host)
    return linux if config.bind_floating else FloatingRecordsOnly(linux)


def build(kind: str, host: str, config: DaemonConfig, runtime) -> RealService:
    """Make the service for ``kind`` on ``host`` and run its start-up work
    (common.assembly: the same start-up as the sim's)."""
    if kind not in KINDS:
        raise ValueError(f"unknown daemon kind {kind!r}; expected one of {', '.join(KINDS)}")
    settings = config.settings()
    manager = assembly.make_manager(kind, host, settings)
    hypervisor: Any = None
    netdriver = None
    if kind == assembly.COMPUTE:
        from real.libvirt_driver import LibvirtDriver

        try:
            # A site's libvirt checks every domain against its schema as it is defined.
            hypervisor = LibvirtDriver(config.libvirt_uri, config.instances_path, validate=config.production)
        except HypervisorError as e:
            raise StartupError(f"cannot open libvirt at {config.libvirt_uri}: {e}") from None
        if config.guest_ends:
            from real.guests import GuestEnds

            hypervisor = GuestEnds(hypervisor, host, config.netns, config.guest_ends, config.net_state_dir)
        if config.s3_url:
            from real import images
            from real.libvirt_driver import IMAGE_CACHE_DIR

            images.install(runtime, config.s3_url, (config.s3_access_key, config.s3_secret_key),
                           os.path.join(config.instances_path, IMAGE_CACHE_DIR))
    if kind != assembly.SCHEDULER:
        netdriver = net_driver(config, host)
    if kind == assembly.NETWORK and config.webhook_interval:
        from common.effects import WebEffect
        from real import tasks
        from real.webhooks import HttpPoster

        runtime.register(WebEffect, HttpPoster(config.time_scale))  # common.webhook_delivery, a periodic task here
        tasks.install(runtime, max_tasks=config.webhook_batch)
    svc = RealService(runtime, kind, host, manager, amqp_url=config.amqp_url, workers=config.workers,
                      hypervisor=hypervisor, netdriver=netdriver, durable=config.durable_delivery,
                      beat=lambda: assembly.heartbeat(kind, host, manager, settings))
    done = runtime.drive(svc.agent, assembly.start_up(kind, host, manager, settings))
    if done and kind == assembly.COMPUTE:
        log.warning("compute %s: settled %d instances left mid-way by a previous run: %s",
                    host, len(done), ", ".join(done))
    elif done and kind == assembly.NETWORK:
        log.warning("network %s: returned %d addresses a crashed allocation had left out of the pool", host, done)
    return svc


class RpcLog:
    """Appends one CSV row per handled message (columns of common.analysis.report.RPC_COLUMNS;
    what the broker alone knows, delivery tag and publish time, stays empty)."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()

    def observe(self, topic, message, consumer, started, finished, outcome):
        row = ["", topic, message.get("method", "?"), message.get("_msg_id", "") or "", "", started, finished,
               consumer, "", outcome]
        with self.lock, open(self.path, "a", newline="") as f:
            csv.writer(f).writerow(row)


def serve(kind: str, host: str, config: DaemonConfig) -> int:
    """Run one daemon until SIGTERM/SIGINT. Returns the exit status."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {kind}.{host} %(levelname)s %(name)s: %(message)s")
    try:
        site.check(config, kind)
        store, runtime = connect(config)
        svc = build(kind, host, config, runtime)
    except StartupError as e:
        print(f"novalab {kind}: refusing to start: {e}", file=sys.stderr)
        return 2
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    observers = []
    metrics = None
    if config.metrics_port is not None:
        from real.metrics import DaemonMetrics

        metrics = DaemonMetrics(config, kind, host, store)
        observers.append(metrics.observe)
        port = metrics.start(config.metrics_port)
        log.info("metrics on http://127.0.0.1:%d/metrics", port)
    if config.rpc_log:
        observers.append(RpcLog(config.rpc_log.replace("{name}", f"{kind}-{host}")).observe)
    if observers:
        svc.on_handled = lambda *row: [observe(*row) for observe in observers]
    lost: list[str] = []

    def on_lost(reason: str):
        lost.append(reason)
        stopping.set()

    svc.on_lost = on_lost
    svc.start(config.report_interval)
    for name, interval, make_work in assembly.periodic_tasks(kind, svc.manager, config.settings()):
        svc.every(interval, lambda make_work=make_work: runtime.drive(svc.agent, make_work()), name)
    log.info("serving %s and %s.%s", kind, kind, host)
    stopping.wait()
    log.info("stopping")
    svc.stop()
    if metrics is not None:
        metrics.stop()
    runtime.close()
    store.close()
    if lost:
        print(f"novalab {kind}: exiting: {lost[0]}", file=sys.stderr)
        return 1
    return 0
