"""Daemon configuration: one YAML file, overridden by NOVALAB_* environment variables.

``NOVALAB_REDIS_URL=redis://db:6379/0 novalab compute --host h1 --config nova.yaml``
- every field below can be set as ``NOVALAB_<FIELD NAME IN CAPITALS>``; the
environment wins over the file, the file over the defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
)

from common.mapped_directory import AttributeMap


class DaemonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: A real site (real/site.py): every harness shortcut off, and a process refuses to
    #: start, naming every setting that is missing or wrong, unless the configuration
    #: describes a real site (README, "Run it for real"). Without it nothing touches a
    #: system hypervisor or the host's own network interfaces.
    production: bool = False
    redis_url: str = "redis://127.0.0.1:6379/0"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    #: Durable exchange and queues, persistent casts (real.transport, "Durable delivery"):
    #: a broker restart loses no accepted message; production requires it. Off by default
    #: for a process started by hand (a vhost that has the transient exchange refuses the
    #: durable one); ``deploy`` and real runs (``cloud.durable_delivery``) turn it on. Every
    #: process of a deployment must agree.
    durable_delivery: bool = False
    #: Prefix of every store key: one deployment's keys never meet another's.
    key_prefix: str = "novalab:"
    #: The hypervisor: libvirt's test driver unless ``production`` (then e.g. qemu:///system).
    libvirt_uri: str = "test:///default"
    instances_path: str = "/var/lib/novalab/instances"
    #: Messages one daemon handles at once (one AMQP connection each).
    workers: PositiveInt = 4
    report_interval: PositiveFloat = 10.0
    service_down_time: PositiveFloat = 60.0
    periodic_interval: PositiveFloat = 60.0
    #: Scenario seconds between two compute passes that destroy domains no live record owns.
    domain_sync_interval: PositiveFloat = 600.0
    build_timeout: PositiveFloat = 600.0
    #: Scenario seconds per wall second (run-scenario --mode real compresses time).
    time_scale: PositiveFloat = 1.0
    #: Wall-clock origin of the compressed clock, shared by every process of a run.
    time_origin: float | None = None
    scheduler_driver: Literal["chance", "simple"] = "simple"
    max_cores: PositiveInt = 16
    #: MiB of memory each compute host offers: the simple scheduler's second capacity
    #: (the scenario's cloud.hosts.memory_mb, ``deploy up --memory-mb``); 0: not checked.
    max_memory_mb: NonNegativeInt = 0
    network_manager: Literal["flat", "flatdhcp", "vlan"] = "flat"
    fixed_range: str = "10.0.0.0/16"
    flat_network_bridge: str = "br100"
    flat_network_dns: str = "8.8.4.4"
    bridge_interface: str = "eth0"
    network_size: PositiveInt = 256
    num_networks: PositiveInt | None = None
    vlan_start: PositiveInt = 100
    vpn_clients: int = 5
    disassociate_timeout: PositiveFloat = 600.0
    #: linux_net: where dnsmasq files live, the namespace to work in (none: the host's
    #: own network stack, which only ``production`` may change), the interface floating
    #: addresses go on, and the dnsmasq hook.
    net_state_dir: str = "/var/lib/novalab/networks"
    netns: str | None = None
    public_interface: str = "eth0"
    dhcpbridge: str | None = None
    #: linux_net: the kernel has no 8021q, so each VLAN gets its own untagged segment
    #: instead of a tag: ``vlan<N>`` is a veth into bridge ``v<N>`` of this network
    #: namespace (the fabric of a ``run-scenario --mode real`` run); none: real 802.1q.
    untagged_vlans: str | None = None
    #: compute: plug a guest end for every instance spawned (libvirt's test driver plugs
    #: no tap): a veth from its bridge into network namespace ``<guest_ends>-<instance>``
    #: where a DHCP client takes its address (real.guests); none: the hypervisor's own.
    guest_ends: str | None = None
    #: A CSV file the daemon appends one row per handled RPC message to (run-scenario
    #: --mode real merges them into the run's rpc.csv); none: no log.
    rpc_log: str | None = None
    #: The directory (OpenLDAP): URL, bind DN (none: cn=admin,<root>), password, root.
    ldap_url: str = "ldap://127.0.0.1:389/"
    ldap_bind_dn: str | None = None
    ldap_password: str = ""
    ldap_root: str = "dc=novalab,dc=local"
    ldap_timeout: PositiveFloat = 5.0
    #: TLS to the directory: StartTLS on an ``ldap://`` URL, and the CA certificates
    #: (PEM) that vouch for the server (none: the system's); ``ldaps://`` is TLS from
    #: the start. The server's certificate is always verified, name included.
    ldap_starttls: bool = False
    ldap_ca_file: str | None = None
    #: An existing directory (common/mapped_directory.py): where users, projects and
    #: role groups are in a plain tree and which attributes hold names and keys. None:
    #: the nova schema below ``ldap_root``. Set in the file (not by environment).
    ldap_map: AttributeMap | None = None
    #: Port of the daemon's Prometheus /metrics endpoint on 127.0.0.1 (none: not served).
    metrics_port: int | None = None
    #: Seconds to wait for Redis and RabbitMQ at start-up before refusing to start.
    connect_timeout: PositiveFloat = 5.0
    #: compute and api: the object store images are fetched from and registered from
    #: (none: images cannot be fetched or registered) and the services' admin key for
    #: it (``<access>:<project>``).
    s3_url: str | None = None
    s3_access_key: str = ""
    s3_secret_key: str = ""
    #: network: the floating (public) addresses this host hands out, as a CIDR (none:
    #: no floating addresses here).
    floating_range: str | None = None
    #: network: bind floating addresses to ``public_interface`` and NAT them with
    #: linux_net (in ``netns`` when set). false: keep the records only, touch no
    #: interface or iptables rule (a one-machine deployment without a namespace of its
    #: own, ``run-scenario --mode real``).
    bind_floating: bool = True
    #: network and compute: perform no network effect at all (bridges, VLANs, dnsmasq,
    #: floating addresses, NAT): each is logged and counts as done, so the records are
    #: all there is (``run-scenario --mode real`` of a FlatDHCP or VLAN scenario without
    #: a namespace of its own).
    net_records_only: bool = False
    #: novalab api: where it listens, its worker threads, how RunInstances dispatches
    #: (queue: straight to the compute topic; scheduler: through the scheduler) and
    #: the default quota of a project. ``images``: the default images ``deploy up``
    #: uploads and registers, public (comma-separated ids; RunInstances takes any
    #: image registered in the store).
    api_listen: str = "127.0.0.1"
    api_port: int = 8773
    api_threads: PositiveInt = 8
    api_dispatch: Literal["queue", "scheduler"] = "scheduler"
    images: str = "ami-tiny"
    quota_instances: PositiveInt = 10
    quota_cores: PositiveInt = 20
    quota_floating_ips: PositiveInt = 10
    #: novalab objectstore --config: where the buckets live and where it listens
    #: (credentials come from the directory, ``ldap_*``).
    objectstore_root: str = "/var/lib/novalab/buckets"
    objectstore_listen: str = "127.0.0.1"
    objectstore_port: int = 3333
    #: network: web hook delivery (common.webhooks.WebhookConfig says what each does):
    #: seconds between passes (0: this host delivers none), seconds per POST, attempts
    #: per delivery, the backoff's first wait and its cap, deliveries attempted at once.
    webhook_interval: NonNegativeFloat = 1.0
    webhook_timeout: PositiveFloat = 5.0
    webhook_max_attempts: PositiveInt = 10
    webhook_backoff_base: PositiveFloat = 1.0
    webhook_backoff_max: PositiveFloat = 300.0
    webhook_batch: PositiveInt = 16

    def network_config(self):
        from common.network import NetworkConfig

        return NetworkConfig(
            manager=self.network_manager, fixed_range=self.fixed_range, bridge=self.flat_network_bridge,
            bridge_interface=self.bridge_interface, dns=self.flat_network_dns, network_size=self.network_size,
            num_networks=self.num_networks, vlan_start=self.vlan_start, vpn_clients=self.vpn_clients,
            disassociate_timeout=self.disassociate_timeout, public_interface=self.public_interface,
        )


    def settings(self):
        """The managers' settings (common.assembly) this daemon runs with."""
        from common.assembly import Settings

        return Settings(
            network=self.network_config(), scheduler_driver=self.scheduler_driver, max_cores=self.max_cores,
            host_memory_mb=self.max_memory_mb, service_down_time=self.service_down_time, floating_range=self.floating_range,
            report_interval=self.report_interval, periodic_interval=self.periodic_interval,
            domain_sync_interval=self.domain_sync_interval, webhooks=self.webhook_config(),
        )

    def webhook_config(self):
        """The web hook worker's settings, or None when ``webhook_interval`` is 0."""
        from common.webhooks import WebhookConfig

        if not self.webhook_interval:
            return None
        return WebhookConfig(interval=self.webhook_interval, timeout=self.webhook_timeout,
                             max_attempts=self.webhook_max_attempts, backoff_base=self.webhook_backoff_base,
                             backoff_max=self.webhook_backoff_max, batch=self.webhook_batch)

    @classmethod
    def from_scenario(cls, scenario, **settings) -> DaemonConfig:
        """The daemons' configuration for a run of ``scenario``: every field of
        ``FROM_SCENARIO`` read from its scenario path, the rest from ``settings``
        (connections, paths, the clock) or the defaults."""
        values = {}
        for name, path in FROM_SCENARIO.items():
            node = scenario
            for part in path.split("."):
                node = getattr(node, part)
            values[name] = node
        if values["scheduler_driver"] == "queue":
            values["scheduler_driver"] = "simple"  # no scheduler daemon runs; the API casts to the queue
        hooks = scenario.webhooks
        if hooks is not None:  # an optional section: not in the table
            values.update(webhook_interval=hooks.interval, webhook_timeout=hooks.timeout,
                          webhook_max_attempts=hooks.max_attempts, webhook_backoff_base=hooks.backoff_base,
                          webhook_backoff_max=hooks.backoff_max, webhook_batch=hooks.batch)
        return cls(**values, **settings)


#: Daemon settings that a scenario decides, by the scenario field they come from: the
#: one table that maps the scenario onto a daemon's configuration file.
FROM_SCENARIO = {
    "workers": "cloud.hosts.workers",
    "scheduler_driver": "cloud.scheduler",
    "max_cores": "max_cores",
    "max_memory_mb": "cloud.hosts.memory_mb",
    "network_manager": "cloud.network.manager",
    "fixed_range": "cloud.network.fixed_range",
    "flat_network_bridge": "cloud.network.bridge",
    "bridge_interface": "cloud.network.bridge_interface",
    "flat_network_dns": "cloud.network.dns",
    "network_size": "cloud.network.network_size",
    "num_networks": "cloud.network.num_networks",
    "vlan_start": "cloud.network.vlan_start",
    "vpn_clients": "cloud.network.vpn_clients",
    "disassociate_timeout": "cloud.network.disassociate_timeout",
    "floating_range": "cloud.network.floating_range",
    "public_interface": "cloud.network.public_interface",
    "report_interval": "timing.report_interval",
    "service_down_time": "timing.service_down_time",
    "periodic_interval": "timing.periodic_interval",
    "domain_sync_interval": "timing.domain_sync_interval",
    "build_timeout": "timing.build_timeout",
    "redis_url": "real.redis_url",
    "amqp_url": "real.amqp_url",
    "durable_delivery": "cloud.durable_delivery",
    "time_scale": "real.time_scale",
}


class ConfigError(ValueError):
    pass


def load(path: str | None, environ=os.environ) -> DaemonConfig:
    """Read the file (if any), apply the environment, validate. Raises ConfigError."""
    data: dict = {}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
    for name in DaemonConfig.model_fields:
        value = environ.get(f"NOVALAB_{name.upper()}")
        if value is not None:
            data[name] = value
    try:
        return DaemonConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{path or 'configuration'}: {problems}") from None
