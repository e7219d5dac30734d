"""The scenario schema: one YAML file drives a run in either mode.

``parse(data, source)`` validates a mapping (already read from YAML) and returns a
frozen ``Scenario``; every problem is reported as ``<source>: <field.path>: <what was
expected>``. Defaults follow 2010 where 2010 had a flag for it.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Annotated, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from common import distributions, network
from common.cloud import DEFAULT_INSTANCE_TYPES, MAX_COUNT_PER_REQUEST
from common.errors import InvalidParameterValue
from common.fault_plan import Fault, target_problem
from common.scenario_bounds import (
    MAX_CHOICES,
    MAX_FAULTS,
    MAX_HOSTS,
    MAX_PROJECTS,
    MAX_REQUESTS,
    MAX_VCPUS,
    estimated_span,
    work_problem,
)
from common.scenario_errors import ScenarioError, describe
from common.scenario_types import (
    Dist,
    MemoryMb,
    Probability,
    QuotaCount,
    Seconds,
    Text,
    Vcpus,
    Weight,
    Workers,
)
from common.scenario_types import Model as _Model
from common.scenario_types import Name as Name
from common.scenario_webhooks import Webhooks, webhooks_problem
from common.scenario_yaml import load_yaml, yaml_problem


class Hosts(_Model):
    count: Annotated[int, Field(gt=0, le=MAX_HOSTS)]
    vcpus: Vcpus = 16
    memory_mb: MemoryMb = 65536
    #: Messages one compute worker handles at once (2010 ran them concurrently).
    workers: Workers = 4


def _ipv4_only(net) -> None:
    """2010's network managers speak IPv4 only: address pools, dnsmasq ranges and NAT rules."""
    if net.version != 4:
        raise ValueError("expected an IPv4 network: the 2010 network managers have no IPv6")


class Network(_Model):
    manager: Literal["flat", "flatdhcp", "vlan"] = "flat"
    fixed_range: Text = "10.0.0.0/16"
    #: flat, flatdhcp: the one bridge every instance joins.
    bridge: Text = "br100"
    #: The physical interface under bridges and vlan interfaces.
    bridge_interface: Text = "eth0"
    dns: Text = "8.8.4.4"
    #: vlan: addresses per project network (a power of two), how many networks (default:
    #: as many as fit in fixed_range), the first vlan number, top addresses kept for VPN
    #: clients.
    network_size: Annotated[int, Field(gt=0, le=1 << 20)] = 256
    num_networks: Annotated[int, Field(gt=0, le=4094)] | None = None
    vlan_start: Annotated[int, Field(gt=0, le=4094)] = 100
    vpn_clients: Annotated[int, Field(ge=0)] = 5
    #: flatdhcp, vlan: seconds before a released address is reused if dnsmasq never
    #: reports the lease's end (2010: fixed_ip_disassociate_timeout).
    disassociate_timeout: Seconds = 600.0
    #: Floating (public) addresses owned by the first network host; none when unset.
    floating_range: Text | None = None
    public_interface: Text = "eth0"
    #: Network workers competing on the ``network`` topic, and messages each handles at once.
    hosts: Annotated[int, Field(gt=0, le=64)] = 1
    workers: Workers = 8

    @field_validator("floating_range")
    @classmethod
    def _floating(cls, value):
        if value is None:
            return value
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError as e:
            raise ValueError(f"expected a network in CIDR form such as 4.4.4.0/24 ({e})") from None
        _ipv4_only(net)
        if net.num_addresses > 1 << 16:
            raise ValueError("floating ranges larger than /16 are not supported")
        return value

    @field_validator("fixed_range")
    @classmethod
    def _cidr(cls, value):
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError as e:
            raise ValueError(f"expected a network in CIDR form such as 10.0.0.0/16 ({e})") from None
        _ipv4_only(net)
        if net.num_addresses < 4:
            raise ValueError("the network needs at least 4 addresses (network, gateway, one host, broadcast)")
        if net.num_addresses > 1 << 20:
            raise ValueError("networks larger than /12 are not supported (the pool is seeded address by address)")
        return value

    @model_validator(mode="after")
    def _layout(self):
        if self.manager == "vlan":
            try:
                specs = network.plan(self.config())
            except InvalidParameterValue as e:
                raise ValueError(str(e)) from None
            if self.vlan_start + len(specs) - 1 > 4094:
                raise ValueError(f"{len(specs)} networks from vlan_start {self.vlan_start} go past vlan 4094")
            if not specs[0].addresses:
                raise ValueError(f"network_size {self.network_size} leaves no address after the reserved ones")
        return self

    def config(self) -> network.NetworkConfig:
        return network.NetworkConfig(
            manager=self.manager, fixed_range=self.fixed_range, bridge=self.bridge,
            bridge_interface=self.bridge_interface, dns=self.dns, network_size=self.network_size,
            num_networks=self.num_networks, vlan_start=self.vlan_start, vpn_clients=self.vpn_clients,
            disassociate_timeout=self.disassociate_timeout, public_interface=self.public_interface,
        )


class InstanceType(_Model):
    vcpus: Vcpus
    memory_mb: MemoryMb
    disk_gb: Annotated[int, Field(ge=0, le=1 << 20)] = 0


class Quota(_Model):
    """Zero is a valid quota: a project that may not launch (its requests are refused
    with InstanceLimitExceeded and counted in the summary)."""

    instances: QuotaCount = 10
    cores: QuotaCount = 20
    floating_ips: QuotaCount = 10


class Project(_Model):
    id: Name
    quota: Quota = Quota()


class Cloud(_Model):
    hosts: Hosts
    network: Network = Network()
    scheduler: Literal["queue", "chance", "simple"] = "simple"
    #: The simple scheduler refuses a host past this many claimed vCPUs (default: the host's vCPUs).
    max_cores: Annotated[int, Field(gt=0, le=MAX_VCPUS)] | None = None
    #: Scheduler services competing on the ``scheduler`` topic (``sched1``..``schedN``,
    #: each also with its own ``scheduler.<host>`` queue); none run when ``scheduler`` is queue.
    schedulers: Annotated[int, Field(gt=0, le=64)] = 1
    #: Messages each scheduler handles at once.
    scheduler_workers: Workers = 8
    #: Concurrent API requests the API service serves.
    api_workers: Workers = 64
    #: Durable queues and persistent casts: a broker restart (``broker_outage``) loses no
    #: accepted message. false: transient, as in 2010 (queued messages die with the broker).
    durable_delivery: bool = True
    instance_types: Annotated[dict[Name, InstanceType], Field(min_length=1, max_length=MAX_CHOICES)] = Field(
        default_factory=lambda: {k: InstanceType(**v) for k, v in DEFAULT_INSTANCE_TYPES.items()}
    )
    images: Annotated[tuple[Name, ...], Field(min_length=1, max_length=MAX_CHOICES)] = ("ami-tiny",)
    #: MiB of each image, fetched by a compute host from the object store before its
    #: first boot of that image (timing.image_fetch says how fast); 0: not modelled.
    image_size_mb: Annotated[float, Field(ge=0, le=1 << 20)] = 0.0
    projects: Annotated[tuple[Project, ...], Field(max_length=MAX_PROJECTS)] = (Project(id="demo"),)

    @model_validator(mode="after")
    def _unique_projects(self):
        ids = [p.id for p in self.projects]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"project ids must be unique; repeated: {', '.join(duplicates)}")
        if not self.projects:
            raise ValueError("at least one project is needed")
        return self


class Hypervisor(_Model):
    boot_time: Dist = distributions.LogNormal(median=20.0, p95=45.0)
    destroy_time: Dist = distributions.Constant(1.0)
    reboot_time: Dist = distributions.Constant(10.0)
    spawn_failure_probability: Probability = 0.0


class ImageFetch(_Model):
    #: MiB per second one compute host pulls an image at (each host at full speed).
    bandwidth_mb_per_s: Annotated[float, Field(gt=0.0, le=1e9)] = 100.0
    #: Added to every transfer: connection, authentication, the store finding the file.
    latency: Dist = distributions.Constant(0.1)


class Timing(_Model):
    #: One store round trip, one broker hop (publish to delivery, and a reply), one API request.
    store: Dist = distributions.Constant(0.0005)
    rpc: Dist = distributions.Constant(0.002)
    api: Dist = distributions.Constant(0.01)
    #: One directory (LDAP) round trip: the API authenticates every request with one.
    directory: Dist = distributions.Constant(0.001)
    hypervisor: Hypervisor = Hypervisor()
    #: A compute host's first fetch of an image (when cloud.image_size_mb > 0).
    image_fetch: ImageFetch = ImageFetch()
    #: One network-driver operation (bridge, vlan, dnsmasq reload, iptables rule).
    network_driver: Dist = distributions.Constant(0.05)
    report_interval: Seconds = 10.0
    service_down_time: Seconds = 60.0
    build_timeout: Seconds = 600.0
    periodic_interval: Seconds = 60.0
    #: Seconds between two passes of each compute host that destroy domains no live
    #: record owns (a build whose last step the store never recorded, then reaped).
    domain_sync_interval: Seconds = 600.0
    network_call_timeout: Seconds = 30.0
    #: Effects whose drawn latency is zero run without a scheduling point: faster, but
    #: they can no longer interleave (races between them become invisible).
    inline_zero_latency: bool = True


class Arrivals(_Model):
    process: Literal["constant", "poisson"] = "poisson"
    #: RunInstances requests per second.
    rate: Annotated[float, Field(gt=0.0, le=1e6)]


class Workload(_Model):
    arrivals: Arrivals
    #: How many RunInstances requests the run makes in all.
    requests: Annotated[int, Field(gt=0, le=MAX_REQUESTS)]
    instances_per_request: Annotated[int, Field(gt=0, le=MAX_COUNT_PER_REQUEST)] = 1
    #: Relative weights of instance types; names must be in cloud.instance_types.
    instance_types: Annotated[dict[str, Weight], Field(min_length=1, max_length=MAX_CHOICES)] = Field(
        default_factory=lambda: {"m1.small": 1.0})
    #: Relative weights of projects; default: all projects alike.
    projects: Annotated[dict[str, Weight], Field(min_length=1, max_length=MAX_PROJECTS)] | None = None
    #: Seconds from launch request to terminate request; null keeps instances forever.
    lifetime: Dist | None = distributions.Exponential(600.0)
    image: Text | None = None
    #: Fraction of requests that allocate a floating address and associate it with their
    #: first instance ``floating_delay`` seconds after launch (released before terminate).
    floating_ips: Probability = 0.0
    floating_delay: Dist = distributions.Constant(60.0)
    #: Sim: sign every request (Signature Version 4 with the user's secret, checked by
    #: the API) as a real client does, paying its CPU cost; false sends trusted
    #: in-process requests that skip only the signature and timestamp checks. Real
    #: mode always signs.
    sign_requests: bool = True


class Slo(_Model):
    time_to_running_p50: Seconds | None = None
    time_to_running_p95: Seconds | None = None
    time_to_running_p99: Seconds | None = None
    max_error_fraction: Probability | None = None


class Metrics(_Model):
    #: Simulated seconds between two samples of the time series.
    interval: Seconds = 10.0


class Sim(_Model):
    """What the simulator alone chooses; real mode ignores this section."""

    #: ``memory``: the managers' Redis commands on plain Python objects (``sim/memstore.py``,
    #: tens of times faster); ``fakeredis``: the reference fake. Both answer as Redis does
    #: (the store contract suite) and give the same run (the differential test).
    store: Literal["memory", "fakeredis"] = "memory"


class Real(_Model):
    """What ``--mode real`` needs; the sim ignores this section."""

    #: Compute workers started for the run, each with its own hypervisor connection
    #: (the sim's cloud.hosts.count is usually far more than a real run can hold).
    hosts: Annotated[int, Field(gt=0, le=1000)] = 4
    #: Simulated seconds per wall second: arrival gaps, lifetimes, boot times of the
    #: workload and every timeout are divided by it.
    time_scale: Annotated[float, Field(gt=0.0, le=1e6)] = 1.0
    #: RunInstances requests of the real run (default: workload.requests).
    requests: Annotated[int, Field(gt=0, le=MAX_REQUESTS)] | None = None
    redis_url: Text = "redis://127.0.0.1:6379/0"
    amqp_url: Text = "amqp://guest:guest@127.0.0.1:5672//"
    #: ``test``: a private libvirt test driver per host; otherwise a libvirt URI.
    libvirt_uri: Text = "test"
    #: Store key prefix; default ``novalab-<name>-<run id>:`` so runs never share keys.
    key_prefix: Text | None = None


class Scenario(_Model):
    name: Name
    description: Annotated[str, Field(max_length=10_000)] = ""
    seed: Annotated[int, Field(ge=0, lt=1 << 64)] = 0
    cloud: Cloud
    workload: Workload
    timing: Timing = Timing()
    slo: Slo = Slo()
    metrics: Metrics = Metrics()
    #: After the last request and the last lifetime, how long to wait for the cloud to settle.
    drain_timeout: Seconds = 1800.0
    #: Timed faults (kill and restart a service, degrade a hypervisor), in order of ``at``.
    faults: Annotated[tuple[Fault, ...], Field(max_length=MAX_FAULTS)] = ()
    #: Choices of the simulator alone (which store); real mode ignores them.
    sim: Sim = Sim()
    real: Real = Real()
    #: Web hook receivers and the delivery worker's retries (common.scenario_webhooks).
    webhooks: Webhooks | None = None
    #: A YAML file, relative to the scenario file, whose ``timing`` section (fitted from a
    #: real run by ``novalab calibrate``) replaces the timing fields it lists.
    calibration: str | None = None

    @model_validator(mode="after")
    def _cross_references(self):
        # Messages start with the field path: _describe passes them through as they are.
        types = self.cloud.instance_types
        unknown = sorted(set(self.workload.instance_types) - set(types))
        if unknown:
            raise ValueError(
                f"workload.instance_types: {', '.join(unknown)} not in cloud.instance_types "
                f"(expected one of: {', '.join(sorted(types))})"
            )
        projects = {p.id for p in self.cloud.projects}
        unknown = sorted(set(self.workload.projects or {}) - projects)
        if unknown:
            raise ValueError(
                f"workload.projects: {', '.join(unknown)} not in cloud.projects (expected one of: {', '.join(sorted(projects))})"
            )
        if self.workload.image is not None and self.workload.image not in self.cloud.images:
            raise ValueError(
                f"workload.image: {self.workload.image!r} is not in cloud.images (expected one of: {', '.join(self.cloud.images)})"
            )
        if self.workload.floating_ips > 0 and self.cloud.network.floating_range is None:
            raise ValueError("workload.floating_ips: needs cloud.network.floating_range to allocate from")
        problems = self.fault_problems(self.cloud.hosts.count)
        if problems:
            raise ValueError(problems[0])
        problem = webhooks_problem(self)
        if problem:
            raise ValueError(problem)
        for name in sorted(self.workload.instance_types):
            if types[name].vcpus > self.max_cores:
                raise ValueError(
                    f"workload.instance_types.{name}: {types[name].vcpus} vCPUs can never fit under "
                    f"cloud.max_cores {self.max_cores}"
                )
            if types[name].memory_mb > self.cloud.hosts.memory_mb:
                raise ValueError(
                    f"workload.instance_types.{name}: {types[name].memory_mb} MiB can never fit in a host's "
                    f"cloud.hosts.memory_mb {self.cloud.hosts.memory_mb}"
                )
        problem = work_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    def estimated_span(self) -> float:
        """Scenario seconds a run is expected to take (``scenario_bounds.estimated_span``)."""
        return estimated_span(self)

    def fault_problems(self, compute_hosts: int) -> list[str]:
        """Problems of the fault plan against ``compute_hosts`` compute hosts (real mode
        checks its own count, ``real.hosts``)."""
        counts = {"compute": compute_hosts, "network": self.cloud.network.hosts,
                  "scheduler": 0 if self.cloud.scheduler == "queue" else self.cloud.schedulers}
        problems = []
        for index, fault in enumerate(self.faults):
            problem = target_problem(fault, counts)
            if problem:
                problems.append(f"faults.{index}: {problem}")
        return problems

    @property
    def max_cores(self) -> int:
        return self.cloud.max_cores or self.cloud.hosts.vcpus


def parse(data, source: str = "<scenario>") -> Scenario:
    """Validate ``data`` (a mapping read from YAML); raises ScenarioError."""
    if not isinstance(data, dict):
        raise ScenarioError(source, [f"expected a mapping of sections at the top level, got {type(data).__name__}"])
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(source, [describe(err, Scenario) for err in e.errors()]) from None


def _load_yaml(raw: bytes | str, source: str):
    try:
        data = load_yaml(raw)
    except yaml.YAMLError as e:
        raise ScenarioError(source, [yaml_problem(e)]) from None
    if data is None:
        raise ScenarioError(source, ["the file is empty"])
    return data


def parse_yaml(raw: bytes | str, source: str = "<scenario>", read_beside=None) -> Scenario:
    """Validate a scenario from YAML text; syntax errors name the line and column.

    ``read_beside(name) -> bytes`` reads a file named relative to the scenario file (the
    caller does the I/O): a scenario with ``calibration`` gets that file's timing. Without
    it such a scenario is refused."""
    scenario = parse(_load_yaml(raw, source), source)
    if scenario.calibration is None:
        return scenario
    if read_beside is None:
        raise ScenarioError(source, [f"calibration: {scenario.calibration!r} cannot be read "
                                     "(the scenario was not read from a file)"])
    name = scenario.calibration
    try:
        calibration = read_beside(name)
    except OSError as e:
        raise ScenarioError(source, [f"calibration: cannot read {name!r} beside the scenario file "
                                     f"({e.strerror or e})"]) from None
    return apply_calibration(scenario, calibration, f"{source}: calibration {name}")


#: Top-level sections of a calibration file (``novalab calibrate`` writes both).
CALIBRATION_SECTIONS = ("timing", "provenance")


def apply_calibration(scenario: Scenario, raw: bytes | str, source: str) -> Scenario:
    """``scenario`` with the timing fields a calibration file lists replaced by its values
    (nested sections such as ``hypervisor`` field by field); raises ScenarioError naming
    the calibration file and the field."""
    data = _load_yaml(raw, source)
    if not isinstance(data, dict):
        raise ScenarioError(source, [f"expected a mapping with a timing section, got {type(data).__name__}"])
    unknown = sorted(set(data) - set(CALIBRATION_SECTIONS))
    if unknown:
        raise ScenarioError(source, [f"{', '.join(map(str, unknown))}: unknown section "
                                     f"(expected: {', '.join(CALIBRATION_SECTIONS)})"])
    timing = data.get("timing")
    if not isinstance(timing, dict) or not timing:
        raise ScenarioError(source, ["timing: expected a mapping of timing fields (store, rpc, hypervisor, ...)"])
    merged = scenario.model_dump(mode="python")

    def merge(into: dict, changes: dict):
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict) and key in _SECTIONS_OF_TIMING:
                merge(into[key], value)
            else:
                into[key] = value

    merge(merged["timing"], timing)
    return parse(merged, source)


def calibration_entry(scenario: Scenario, read_beside) -> dict | None:
    """What a run's manifest records of the scenario's calibration: the file as named
    and the sha256 of its bytes (read by ``read_beside``); None without one."""
    if scenario.calibration is None:
        return None
    return {"file": scenario.calibration, "hash": "sha256:" + hashlib.sha256(read_beside(scenario.calibration)).hexdigest()}


#: Timing fields that are sections of their own (merged field by field, not replaced).
_SECTIONS_OF_TIMING = ("hypervisor", "image_fetch")


def with_overrides(scenario: Scenario, overrides: dict, source: str = "<overrides>") -> Scenario:
    """A copy with fields changed by dotted path (``{"workload.requests": 500}``),
    validated again; a path that names no field is a ScenarioError."""
    data = scenario.model_dump(mode="python")
    for path, value in overrides.items():
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ScenarioError(source, [f"{path}: no such field"])
            node = node[part]
        node[leaf] = value
    return parse(data, source)
