"""Build a simulated cloud from a scenario, run it to quiescence and audit it."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import simpy

from common import assembly, invariants, keys, network, recovery, service, webhooks
from common import images as image_registry
from common.analysis import report
from common.cloud import LEFTOVER_PROBES, CloudController
from common.context import SYSTEM
from common.directory import Directory
from common.ec2 import Ec2Api
from common.effects import ZRangeByScore
from common.errors import NovaError
from common.workload import WORKLOAD_STREAM, Workload, workload_user
from sim import api as sim_api
from sim import collector, faults, store_stall, tasks
from sim import directory as sim_directory
from sim import images as image_cache
from sim import webhooks as sim_webhooks
from sim.broker import Broker
from sim.hypervisor import FakeHypervisor
from sim.memstore import make_store
from sim.netdriver import FakeNetDriver
from sim.recorder import Recorder
from sim.runtime import SimRuntime, stream
from sim.services import SimService, periodic

#: Simulated seconds between two checks for quiescence while draining.
DRAIN_POLL = 5.0

#: Reads the instances that have not settled (the build-timeout reaper's watch: every
#: transitional state but rebooting, which the workload never asks for).
_BUILDING_PROBE = ZRangeByScore(keys.BUILDING, "-inf", "+inf", 1)

#: Simulated seconds between two progress reports.
PROGRESS_STEP = 20.0

MIB = 1024 * 1024


@dataclass
class SimResult:
    scenario: object
    seed: int
    recorder: Recorder
    verdicts: list
    summary: dict
    snapshot: object
    broker_stats: dict
    wall_seconds: float


class Simulation:
    def __init__(self, scenario, seed: int):
        self.scenario = scenario
        self.seed = seed
        random.seed(seed)  # fakeredis's SPOP draws from the global stream (MemoryStore: its own, alike)
        env = self.env = simpy.Environment()
        timing = scenario.timing
        self.recorder = Recorder()
        self.store = make_store(scenario.sim.store, seed)
        #: Performs the store effects in the store's place when the plan stalls it.
        self.stall = store_stall.wrap(env, self.store, scenario.faults)
        rpc_rng = stream(seed, "latency/delivery")
        self.broker = Broker(env, delivery_latency=lambda: timing.rpc.sample(rpc_rng))
        self.runtime = SimRuntime(env, seed, self.stall or self.store, self.broker, timing, self.recorder,
                                  durable=scenario.cloud.durable_delivery)
        cloud = scenario.cloud
        image_bytes = int(cloud.image_size_mb * MIB)
        self.image_cache = None
        if image_bytes:
            fetch = timing.image_fetch
            self.image_cache = image_cache.install(
                self.runtime, fetch.bandwidth_mb_per_s * MIB, fetch.latency, stream(seed, "image-fetch")
            )
            for name in cloud.images:  # what deploy up uploads before it registers them
                self.image_cache.put(image_registry.default_location(name), SYSTEM.project_id, image_bytes)
        self.settings = settings = assembly.Settings.from_scenario(scenario)
        self.net_config = settings.network
        self.network_sizes = {spec.network_id: len(spec.addresses) for spec in network.plan(self.net_config)}
        self.cloud = CloudController(settings.cloud, network.make_manager(self.net_config))
        self.directory = sim_directory.install(self.runtime, timing.directory, stream(seed, "latency/directory"))
        self.credentials = _credentials(scenario, stream(seed, "credentials"))
        by_project = {p.id: self.credentials[workload_user(p.id)] for p in cloud.projects}
        ec2 = Ec2Api(self.cloud, Directory(self.directory.root))
        self.api = sim_api.install(self.runtime, sim_api.SimApi(
            self.runtime, ec2, by_project, workers=cloud.api_workers, latency=timing.api,
            rng=stream(seed, "latency/api"), signed=scenario.workload.sign_requests))
        tasks.install(self.runtime)
        self.receivers = None
        if scenario.webhooks is not None:
            self.receivers = sim_webhooks.install(self.runtime, scenario.webhooks, stream(seed, "webhooks"))
        self.hypervisors: list = []
        self.netdrivers: list = []
        self.services: list = []
        for spec in assembly.roster(scenario):
            manager = assembly.make_manager(spec.topic, spec.host, settings)
            hv = None
            if spec.topic == assembly.COMPUTE:
                hv = FakeHypervisor(env, spec.host, cloud.hosts.vcpus, cloud.hosts.memory_mb, timing.hypervisor,
                                    stream(seed, f"hypervisor/{spec.host}"))
                self.hypervisors.append(hv)
            netdriver = self._netdriver(spec.host) if spec.topic != assembly.SCHEDULER else None
            self.services.append(SimService(self.runtime, spec.topic, spec.host, manager, spec.workers, hv, netdriver,
                                            self._beat(spec.topic, spec.host, manager)))
        by_kind: dict = {}
        for svc in self.services:
            by_kind.setdefault(svc.topic, []).append(svc)
        self.fault_targets = faults.FaultTargets(env, by_kind, self.hypervisors, self._restart, self.store,
                                                 webhooks=self.receivers, broker=self.broker, runtime=self.runtime,
                                                 on_store_wipe=self.recorder.store_wiped, stall=self.stall)
        self.workload = Workload(scenario, stream(seed, WORKLOAD_STREAM))

    def _beat(self, topic, host, manager):
        """A service's heartbeat work (a compute or network host's also watches the store)."""
        return lambda: assembly.heartbeat(topic, host, manager, self.settings)

    def _netdriver(self, host):
        driver = FakeNetDriver(self.env, host, self.scenario.timing.network_driver, stream(self.seed, f"netdriver/{host}"))
        self.netdrivers.append(driver)
        return driver

    def run(self, progress=None) -> SimResult:
        started = time.perf_counter()
        env, timing, runtime = self.env, self.scenario.timing, self.runtime
        setup = env.process(self._setup())
        env.run(until=setup)
        beat_rng = stream(self.seed, "heartbeat-offsets")
        for svc in self.services:
            svc.start_background(timing.report_interval, beat_rng.uniform(0, timing.report_interval),
                                 self._periodic_tasks(svc))
        self._start_api_periodic_work()
        faults.play(self.fault_targets, self.scenario.faults)
        env.process(
            self.recorder.sampler(
                env, self.scenario.metrics.interval, self.broker, self.store, self.network_sizes, self.hypervisors,
                self.api,
            )
        )
        done = env.process(self._drive_to_quiescence())
        while not done.triggered:
            # Chunks only stop the loop to report; they never change what runs when.
            env.run(until=env.any_of([done, env.timeout(PROGRESS_STEP)]))
            if progress is not None:
                progress(self.workload.issued, self.workload.finished, env.now)
        self.recorder.sample(env.now, self.broker, self.store, self.network_sizes, self.hypervisors, self.api)
        snapshot = self.snapshot()
        verdicts = invariants.check_all(snapshot)
        wall = time.perf_counter() - started
        broker_stats = self.broker.queue_stats()
        summary = report.summarize(
            scenario=self.scenario,
            seed=self.seed,
            mode="sim",
            store=snapshot.store,
            rejected=self.recorder.rejected,
            series=self.recorder.series,
            broker_stats=broker_stats,
            verdicts=verdicts,
            fingerprint=runtime.fingerprint,
            sim_time=env.now,
            effects=runtime.effects,
            wall_seconds=wall,
            extra={
                "rpc_timeouts": self.recorder.timeouts,
                "late_replies_dropped": runtime.late_replies,
                "poison_messages": sum(s.poison for s in self.services),
                "unroutable": self.broker.unroutable,
                "stranded_messages": invariants.stranded_messages(snapshot),
                "broker_restarts": self.broker.restarts,
                "messages_lost_at_broker_restart": self.broker.lost,
                "store_commands": self.store.commands,
                "sim_store": self.store.kind,
                "peak_host_vcpu_ratio": max((h.peak_vcpu_ratio for h in self.hypervisors), default=0.0),
                "hosts_ever_overcommitted": sum(1 for h in self.hypervisors if h.peak_vcpu_ratio > 1.0),
                "network_manager": self.net_config.manager,
                "network_driver_operations": sum(sum(d.operations.values()) for d in self.netdrivers),
                "network_driver_duplicates": sum(sum(d.duplicates.values()) for d in self.netdrivers),
                "image_transfers": self.image_cache.transfers if self.image_cache else 0,
                "image_bytes_transferred": self.image_cache.bytes_transferred if self.image_cache else 0,
                "faults": [{"at": at, "what": what} for at, what in self.fault_targets.log],
                "api": {**self.workload.api_summary(), "admission_queue_peak": self.api.peak_queued},
                **self._webhooks_summary(snapshot.store),
                **({"store_stall": {"timed_out": self.stall.timed_out, "ran_late": self.stall.ran_late}}
                   if self.stall is not None else {}),
            },
        )
        return SimResult(self.scenario, self.seed, self.recorder, verdicts, summary, snapshot, broker_stats, wall)

    def _start_api_periodic_work(self):
        """The API's periodic work: the build-timeout reaper, the default images' keeper
        and the reaper of what failures left for later (quota, addresses)."""
        timing = self.scenario.timing
        work = (
            (timing.periodic_interval, lambda: self.cloud.reap_stuck_builds(SYSTEM)),
            (timing.report_interval,
             lambda: recovery.keep_default_images(self.scenario.cloud.images, self.image_cache is not None)),
            (timing.periodic_interval, lambda: self.cloud.reap_leftovers(SYSTEM)),
        )
        for interval, make_work in work:
            self.env.process(periodic(self.runtime, self.api.agent, interval, make_work))

    def _setup(self):
        """The cloud before the workload: the directory's users and projects, the
        default images (registered from their objects when images are modelled), the web
        hook receivers' registrations, then each service's start-up and first heartbeat
        (network hosts first)."""
        agent = self.runtime.agent("setup")
        yield from self.runtime.drive(agent, assembly.populate_directory(Directory(self.directory.root), self.scenario,
                                                                         self.credentials))
        yield from self.runtime.drive(agent, image_registry.register_defaults(self.scenario.cloud.images,
                                                                              self.image_cache is not None))
        if self.receivers is not None:
            projects = self.scenario.webhooks.project_ids(self.scenario.cloud.projects)
            yield from self.runtime.drive(agent, self.receivers.register_all(projects))
        for svc in self.services:
            yield from self.runtime.drive(svc.agent, self._start_up(svc))
            yield from self.runtime.drive(svc.agent, service.report_state(svc.topic, svc.host))

    def _webhooks_summary(self, store) -> dict:
        if self.receivers is None:
            return {}
        return {"webhooks": {**webhooks.summary(store, self.receivers.receipts), **self.receivers.summary()}}

    def _start_up(self, svc):
        return assembly.start_up(svc.topic, svc.host, svc.manager, self.settings)

    def _periodic_tasks(self, svc):
        """(interval, make_work) pairs a service runs while it is up."""
        return [(interval, make_work) for _, interval, make_work
                in assembly.periodic_tasks(svc.topic, svc.manager, self.settings)]

    def _restart(self, svc):
        return svc.restart(lambda s: self._start_up(s), self.scenario.timing.report_interval,
                           self._periodic_tasks(svc))

    def _drive_to_quiescence(self):
        env = self.env
        yield from self.runtime.drive(self.runtime.agent("workload"), self.workload.run())
        deadline = env.now + self.scenario.drain_timeout
        while env.now < deadline and not self._quiet():
            yield env.timeout(DRAIN_POLL)
        if self.receivers is not None:  # and until every web hook delivery is done or given up
            while env.now < deadline and (yield from self.runtime.drive(self.runtime.agent("drain"), _pending())):
                yield env.timeout(DRAIN_POLL)

    def _quiet(self) -> bool:
        if not all(s["depth"] == 0 and s["unacked"] == 0 for s in self.broker.queue_stats().values()):
            return False
        try:  # instrumentation reads, past any stall
            # The store, not the recorder: the recorder hears of the transitions whose
            # callers got an answer, and a transition the store ran after its caller gave
            # up only the store knows of.
            if self.store.execute(_BUILDING_PROBE):
                return False
            return not any(self.store.execute(probe) for probe in LEFTOVER_PROBES)  # still to be given back
        except NovaError:
            return False  # the store is down: not quiet yet

    def snapshot(self):
        return invariants.Snapshot(
            now=self.env.now,
            build_timeout=self.scenario.timing.build_timeout,
            service_down_time=self.scenario.timing.service_down_time,
            store=self.store.dump(),
            domains={h.host: {name: d.state for name, d in h.domains.items()} for h in self.hypervisors},
            queues={q: {"ready": s["depth"], "unacked": s["unacked"]} for q, s in self.broker.queue_stats().items()},
        )


def _pending():
    """-> whether a web hook delivery is still pending (one store read)."""
    return bool((yield ZRangeByScore(keys.WEBHOOK_PENDING, "-inf", "+inf", 1)))


def simulate(scenario, seed: int | None = None, progress=None) -> SimResult:
    seed = scenario.seed if seed is None else seed
    with collector.tuned():
        return Simulation(scenario, seed).run(progress)


def _credentials(scenario, rng) -> dict[str, tuple[str, str]]:
    """Deterministic keys for the run's directory users (a real run draws them from
    ``secrets``)."""
    return {user: (f"{rng.getrandbits(80):020x}", f"{rng.getrandbits(180):045x}")
            for user in assembly.directory_users(scenario)}
