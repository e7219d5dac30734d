"""The processes of a ``novalab deploy``: which daemons, their names, command lines,
environments and queues.

A deployment runs ``--computes`` compute workers (``host1``..), ``--network-workers``
network workers (``net1``..) and ``--schedulers`` schedulers (``sched1``..), named as
the sim names them (common.assembly), then the EC2 API and the object store. Workers of
a kind compete on their topic's shared queue (``network``, ``scheduler``), and each
also has its own ``<topic>.<host>`` queue, as in the sim.

What every process shares is ``nova.yaml``. What is its own:

- its name ``<kind>-<host>`` (``api`` and ``objectstore`` have no host), which names its
  log (``logs/<name>.log``) and its pid file (``run/<name>.pid``), and its RPC log when
  ``rpc_log`` has ``{name}`` in it;
- a compute worker's libvirt test-driver node (``nodes/<host>.xml``:
  ``NOVALAB_LIBVIRT_URI``);
- a network worker's ``net_state_dir`` (``networks/<host>``: ``NOVALAB_NET_STATE_DIR``),
  where a DHCP manager keeps its dnsmasq files, as on a network host of its own.

Which network worker serves a network is claimed in the store by the first one asked
(common.network, ``set_network_host``); the floating range is owned by ``net1`` alone,
as in the sim (common.assembly.FLOATING_HOST). ``metrics_port`` is one setting for
every process, so a deployment leaves it unset (one port cannot serve two daemons).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common import assembly
from common.assembly import ServiceSpec
from real.processes import novalab_command


@dataclass(frozen=True)
class Process:
    """One process of the deployment."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    #: (kind, host) of a worker, whose heartbeat ``up`` waits for; None for api and objectstore.
    worker: tuple[str, str] | None = None


def services(computes: list[str], network_hosts: list[str], scheduler_hosts: list[str]) -> tuple[ServiceSpec, ...]:
    """The workers, network hosts first (compute start-up may need their networks);
    ``workers`` is 0: how many messages each handles is nova.yaml's ``workers``."""
    kinds = ((assembly.NETWORK, network_hosts), (assembly.COMPUTE, computes), (assembly.SCHEDULER, scheduler_hosts))
    return tuple(ServiceSpec(kind, host, 0) for kind, hosts in kinds for host in hosts)


def plan(computes: int, network_workers: int, schedulers: int) -> dict:
    """The hosts of each kind, as the deployment's state file keeps them."""
    return {"hosts": [f"host{i + 1}" for i in range(computes)],
            "network_hosts": assembly.network_hosts(network_workers),
            "scheduler_hosts": assembly.scheduler_hosts(schedulers)}


def services_of(state: dict) -> tuple[ServiceSpec, ...]:
    """The workers a state file lists (one written before scale-out had one network
    worker ``net1`` and one scheduler ``sched1``)."""
    return services(state.get("hosts", []), state.get("network_hosts", assembly.network_hosts(1)),
                    state.get("scheduler_hosts", assembly.scheduler_hosts(1)))


def queue_names(state: dict) -> list[str]:
    """Every queue of the deployment a state file describes."""
    return assembly.queue_names(services_of(state))


def process_name(kind: str, host: str) -> str:
    return f"{kind}-{host}"


def processes(directory: Path, config_path: Path, state: dict, vcpus: int, memory_mb: int) -> list[Process]:
    """Every process to start, in order: the workers, then the API and the object store."""
    from real.libvirt_driver import LibvirtDriver

    cfg = str(config_path)
    out = []
    for spec in services_of(state):
        env = {}
        if spec.topic == assembly.COMPUTE:
            env["NOVALAB_LIBVIRT_URI"] = LibvirtDriver.test_uri_for_host(directory / "nodes", spec.host, vcpus,
                                                                         memory_mb)
        elif spec.topic == assembly.NETWORK:
            env["NOVALAB_NET_STATE_DIR"] = str(directory / "networks" / spec.host)
        out.append(Process(process_name(spec.topic, spec.host),
                           novalab_command(spec.topic, "--host", spec.host, "--config", cfg), env,
                           (spec.topic, spec.host)))
    out.append(Process("api", novalab_command("api", "--config", cfg)))
    out.append(Process("objectstore", novalab_command("objectstore", "--config", cfg)))
    return out
