"""What a cloud is made of, built once from the scenario: settings, the service roster,
each service's manager, its start-up work and its periodic work.

Both runners assemble a run from this module, so a service starts, reconciles and
keeps itself up the same way whether it is a SimPy process or a daemon:

- ``Settings.from_scenario`` is the one place a scenario becomes the configurations
  the managers take (network layout, scheduler, the API's CloudConfig, intervals). A
  daemon reads the same settings from its configuration file (``real.config``).
- ``roster`` lists the services (topic, host, concurrent messages) with the names
  both modes use: compute ``host1``.., network ``net1``.., scheduler ``sched1``..;
  ``queue_names`` the queues they consume (each topic, and each service's own).
- ``make_manager`` and ``start_up`` build a service's manager and run its start-up:
  a compute host reconciles its host (``init_host``); a network host seeds the
  networks and the floating range it owns (each guarded: a second start changes
  nothing), rebuilds what it serves (``init_host``) and returns addresses a crash left
  out of the pool. Both end by marking themselves in the store (common.recovery).
- ``heartbeat`` is a service's heartbeat; a compute or network host's also watches the
  store and re-asserts start-up's state if the store loses it (common.recovery).
- ``periodic_tasks`` is the work a service repeats while it is up (a network host
  also delivers web hooks, ``common.webhook_delivery``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common import floating, network, recovery, scheduler, service, webhook_delivery
from common.cloud import CloudConfig, Quota
from common.compute import ComputeManager
from common.webhooks import WebhookConfig
from common.workload import workload_user

COMPUTE, NETWORK, SCHEDULER = "compute", "network", "scheduler"
#: The host that owns the floating range (2010: the first network host); the other
#: network hosts own none.
FLOATING_HOST = "net1"


def compute_hosts(count: int) -> list[str]:
    """Compute host names, zero-padded so that they sort as they are numbered."""
    width = len(str(count))
    return [f"host{i + 1:0{width}d}" for i in range(count)]


def network_hosts(count: int) -> list[str]:
    return [f"net{i + 1}" for i in range(count)]


def scheduler_hosts(count: int) -> list[str]:
    return [f"sched{i + 1}" for i in range(count)]


@dataclass(frozen=True)
class Settings:
    """Everything the managers are configured with, in scenario seconds."""

    network: network.NetworkConfig
    scheduler_driver: str
    max_cores: int
    service_down_time: float
    floating_range: str | None
    report_interval: float
    periodic_interval: float
    domain_sync_interval: float
    cloud: CloudConfig = field(default_factory=CloudConfig)
    #: MiB each compute host offers, the simple scheduler's second capacity; 0: unchecked.
    host_memory_mb: int = 0
    #: Web hook delivery, a periodic task of every network host; None: not run.
    webhooks: WebhookConfig | None = None

    @classmethod
    def from_scenario(cls, scenario) -> Settings:
        cloud, timing = scenario.cloud, scenario.timing
        return cls(
            network=cloud.network.config(),
            scheduler_driver=cloud.scheduler,
            max_cores=scenario.max_cores,
            service_down_time=timing.service_down_time,
            floating_range=cloud.network.floating_range,
            report_interval=timing.report_interval,
            periodic_interval=timing.periodic_interval,
            domain_sync_interval=timing.domain_sync_interval,
            cloud=CloudConfig(
                scheduler=cloud.scheduler,
                instance_types={k: v.model_dump() for k, v in cloud.instance_types.items()},
                quotas={p.id: Quota(p.quota.instances, p.quota.cores, p.quota.floating_ips) for p in cloud.projects},
                network_call_timeout=timing.network_call_timeout,
                build_timeout=timing.build_timeout,
                service_down_time=timing.service_down_time,
            ),
            host_memory_mb=cloud.hosts.memory_mb,
            webhooks=scenario.webhooks.config() if scenario.webhooks is not None else None,
        )

    def scheduler_config(self) -> scheduler.SchedulerConfig:
        return scheduler.SchedulerConfig(self.scheduler_driver, self.max_cores, self.service_down_time,
                                         self.host_memory_mb)


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the roster: its topic, its host and how many messages it handles at once."""

    topic: str
    host: str
    workers: int

    @property
    def name(self) -> str:
        return f"{self.topic}.{self.host}"


def roster(scenario, compute_count: int | None = None) -> tuple[ServiceSpec, ...]:
    """The services of a run: compute hosts (``compute_count``, default the scenario's
    cloud.hosts.count; real mode runs ``real.hosts``), network hosts, and
    ``cloud.schedulers`` schedulers unless dispatch is by queue. Network hosts come
    first: compute start-up may need their networks."""
    cloud = scenario.cloud
    count = cloud.hosts.count if compute_count is None else compute_count
    services = [ServiceSpec(NETWORK, host, cloud.network.workers) for host in network_hosts(cloud.network.hosts)]
    services += [ServiceSpec(COMPUTE, host, cloud.hosts.workers) for host in compute_hosts(count)]
    if cloud.scheduler != scheduler.QUEUE:
        services += [ServiceSpec(SCHEDULER, host, cloud.scheduler_workers) for host in scheduler_hosts(cloud.schedulers)]
    return tuple(services)


def queue_names(services) -> list[str]:
    """Every queue the ``services`` (ServiceSpecs) consume: each topic once, then each
    service's own ``<topic>.<host>``."""
    topics = list(dict.fromkeys(spec.topic for spec in services))
    return topics + [spec.name for spec in services]


def make_manager(topic: str, host: str, settings: Settings):
    """The manager a service of ``topic`` on ``host`` runs."""
    net = network.make_manager(settings.network, host)
    if topic == COMPUTE:
        return ComputeManager(host, net)
    if topic == NETWORK:
        return net
    if topic == SCHEDULER:
        return scheduler.SchedulerManager(settings.scheduler_config(), net)
    raise ValueError(f"unknown service topic {topic!r}; expected {COMPUTE}, {NETWORK} or {SCHEDULER}")


def start_up(topic: str, host: str, manager, settings: Settings):
    """A service's start-up work (module docstring); -> what it settled or returned:
    compute, the instances it settled; network, the addresses it put back."""
    if topic == COMPUTE:
        settled = yield from manager.init_host()
        yield from recovery.mark(topic, host)
        return settled
    if topic == NETWORK:
        yield from manager.create_networks()
        if settings.floating_range and host == FLOATING_HOST:
            yield from floating.create_floating_ips(host, settings.floating_range)
        yield from manager.init_host()
        returned = yield from manager.sweep_leaked_addresses(0)
        yield from recovery.mark(topic, host)
        return returned
    return None


def heartbeat(topic: str, host: str, manager, settings: Settings):
    """One heartbeat of a service (every report interval). A compute or network host's
    is also its store watch: it re-asserts what start-up wrote if the store lost it
    (common.recovery), and returns what it re-asserted, else None."""
    if topic not in (COMPUTE, NETWORK):
        yield from service.report_state(topic, host)
        return None
    owned = settings.floating_range if topic == NETWORK and host == FLOATING_HOST else None
    return (yield from recovery.beat(topic, host, manager, settings.report_interval, owned))


def periodic_tasks(topic: str, manager, settings: Settings):
    """The work a service of ``topic`` repeats while it is up, as (name, interval,
    make_work) triples (the heartbeat aside)."""
    if topic == COMPUTE:
        return [("domain sync", settings.domain_sync_interval, manager.sync_domains)]
    if topic != NETWORK:
        return []
    interval = settings.periodic_interval
    tasks = [("leak sweep", interval, lambda: manager.sweep_leaked_addresses(interval))]
    if manager.dhcp:
        tasks.append(("reclaim", interval, manager.reclaim_fixed_ips))
    hooks = settings.webhooks
    if hooks is not None:
        tasks.append(("webhook delivery", hooks.interval, lambda: webhook_delivery.deliver_due(hooks)))
    return tasks


#: The user who manages every scenario project (the workload users are members).
OPERATOR = "operator"
#: The roles each workload user holds, globally and in its project: RunInstances and
#: TerminateInstances need sysadmin, the address actions netadmin.
WORKLOAD_ROLES = ("sysadmin", "netadmin")


def directory_users(scenario) -> list[str]:
    """The users a run creates: the operator, then one workload user per project."""
    return [OPERATOR] + [workload_user(p.id) for p in scenario.cloud.projects]


def populate_directory(directory, scenario, credentials):
    """Create the operator, each project and its workload user with their roles.
    ``credentials`` maps each of ``directory_users`` to (access key, secret key)."""
    yield from directory.create_user(OPERATOR, *credentials[OPERATOR])
    for project in scenario.cloud.projects:
        user = workload_user(project.id)
        yield from directory.create_user(user, *credentials[user])
        yield from directory.create_project(project.id, OPERATOR, "a scenario project", members=(user,))
        for role in WORKLOAD_ROLES:
            yield from directory.add_role(user, role)
            yield from directory.add_role(user, role, project.id)
