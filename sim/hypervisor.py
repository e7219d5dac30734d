"""A fake hypervisor per simulated host.

*Features*: vCPU and memory capacity; boot, reboot and destroy times drawn from the
scenario's distributions; vCPU overcommit slows boots in proportion (a host with 24
vCPUs claimed on 16 boots 1.5x slower); memory is never overcommitted (spawn raises
InsufficientMemory); an optional spawn-failure probability, failing part-way through the
boot and leaving no domain behind; a degraded period (the fault plan) with slower boots
and a failure probability of its own.

*What it does not model*: disks, images and their transfer, networking, CPU time and guest load
after boot, guest crashes, pause/suspend, migration, the 0.5 s state polling of the 2010
driver (a boot is one wait).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import HypervisorError, InsufficientMemory

BOOTING, RUNNING = "booting", "running"


@dataclass
class Domain:
    name: str
    vcpus: int
    memory_mb: int
    state: str


class FakeHypervisor:
    """One host's hypervisor; a ``common.performers.HypervisorPerformer`` whose
    spawn, destroy and reboot are SimPy generators."""

    def __init__(self, env, host: str, vcpus: int, memory_mb: int, timing, rng):
        self.env = env
        self.host = host
        self.vcpus = vcpus
        self.memory_mb = memory_mb
        self.timing = timing
        self.rng = rng
        self.domains: dict[str, Domain] = {}
        self.used_vcpus = 0
        self.used_memory_mb = 0
        self.peak_vcpu_ratio = 0.0
        self.boot_slowdown = 1.0
        #: While degraded with a failure probability of its own; None: timing's.
        self.degraded_failure_probability: float | None = None

    def degrade(self, boot_slowdown: float = 1.0, spawn_failure_probability: float | None = None) -> None:
        """A fault: boots take ``boot_slowdown`` times longer and fail with the given
        probability (default: unchanged) until ``restore``. Boots under way keep theirs."""
        self.boot_slowdown = boot_slowdown
        self.degraded_failure_probability = spawn_failure_probability

    def restore(self) -> None:
        self.boot_slowdown = 1.0
        self.degraded_failure_probability = None

    def spawn(self, spec):
        """SimPy generator: define and boot. Raises HypervisorError without leaving a domain."""
        if spec.name in self.domains:
            raise HypervisorError(f"domain {spec.name} exists on {self.host}")
        if self.used_memory_mb + spec.memory_mb > self.memory_mb:
            raise InsufficientMemory(
                f"{self.host} has {self.memory_mb - self.used_memory_mb} MB free, {spec.name} needs {spec.memory_mb} MB"
            )
        domain = Domain(spec.name, spec.vcpus, spec.memory_mb, BOOTING)
        self._add(domain)
        slowdown = max(1.0, self.used_vcpus / self.vcpus) * self.boot_slowdown
        boot = self.timing.boot_time.sample(self.rng) * slowdown
        failure_probability = self.degraded_failure_probability
        if failure_probability is None:
            failure_probability = self.timing.spawn_failure_probability
        fails = self.rng.random() < failure_probability
        yield self.env.timeout(boot * (self.rng.random() if fails else 1.0))
        if self.domains.get(spec.name) is not domain:
            raise HypervisorError(f"domain {spec.name} was destroyed while booting")
        if fails:
            self._remove(spec.name)
            raise HypervisorError(f"domain {spec.name} failed to boot on {self.host}")
        domain.state = RUNNING

    def destroy(self, name: str):
        """SimPy generator -> True if the domain existed. A missing domain is success."""
        if name not in self.domains:
            return False
        self._remove(name)
        yield self.env.timeout(self.timing.destroy_time.sample(self.rng))
        return True

    def reboot(self, name: str):
        domain = self.domains.get(name)
        if domain is None:
            raise HypervisorError(f"no domain {name} on {self.host}")
        domain.state = BOOTING
        yield self.env.timeout(self.timing.reboot_time.sample(self.rng))
        if self.domains.get(name) is domain:
            domain.state = RUNNING

    def info(self, name: str):
        domain = self.domains.get(name)
        if domain is None:
            return None
        return {"state": domain.state, "vcpus": domain.vcpus, "memory_mb": domain.memory_mb}

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.domains))

    def _add(self, domain: Domain):
        self.domains[domain.name] = domain
        self.used_vcpus += domain.vcpus
        self.used_memory_mb += domain.memory_mb
        self.peak_vcpu_ratio = max(self.peak_vcpu_ratio, self.used_vcpus / self.vcpus)

    def _remove(self, name: str):
        domain = self.domains.pop(name)
        self.used_vcpus -= domain.vcpus
        self.used_memory_mb -= domain.memory_mb
