"""``run-scenario --mode real``: the scenario's workload against live services.

Theory of operation
-------------------
1. Check Redis and RabbitMQ answer; write a daemon configuration into the run directory
   (a fresh key prefix, the scenario's timing compressed by ``real.time_scale``).
2. Start the daemons as processes, exactly as an operator would: ``real.hosts`` compute
   workers (each its own libvirt connection), one network worker, and a scheduler unless the
   scenario dispatches by queue. Wait for their heartbeats. With ``libvirt_uri: test``
   each compute gets a private test-driver node of the scenario's host size.
3. Drive the workload from this process: the API's workflows (CloudController) run in
   a bounded thread pool, on the wall clock, with arrival gaps and lifetimes divided by
   the time scale. The build-timeout reaper runs here too, as the API's periodic task.
4. Drain: wait until no instance is building and the queues are empty (bounded).
5. Audit: dump the store, ask each compute for its domains over RPC, read queue depths
   from RabbitMQ, run the same invariant checkers as the sim, write the same run
   directory, print the same summary.
6. Clean up what it created: stop the daemons (SIGTERM, then SIGKILL after a bound),
   delete the run's queues and store keys.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import heapq
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from rich.console import Console

from common import invariants, keys, lifecycle, network, report, rpc
from common.cloud import CloudConfig, CloudController, Quota
from common.context import SYSTEM, RequestContext
from common.effects import HGet, SCard, SMembers, ZRangeByScore, ZScore
from common.errors import NovaError
from common.events import InstanceStateChanged, RequestRejected
from common.scenario import ScenarioError, parse_yaml
from real import transport
from real.config import DaemonConfig
from real.daemon import StartupError, connect, network_manager
from real.runner import Agent, RealRuntime
from real.transport import RpcClient

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

#: Wall seconds to wait for every daemon's first heartbeat.
STARTUP_TIMEOUT = 60.0
#: Wall seconds a daemon gets to stop after SIGTERM before SIGKILL.
STOP_TIMEOUT = 15.0
#: Wall seconds between two checks for quiescence while draining.
DRAIN_POLL = 0.5
#: Wall seconds for one list_domains call during the audit.
AUDIT_CALL_TIMEOUT = 10.0


class RealRecorder:
    """Thread-safe observations made in this process (the API's side)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rejected = {}
        self.rpc_rows = []
        self.series = []

    def observe(self, event, now):
        if isinstance(event, RequestRejected):
            with self.lock:
                key = (event.action, event.code)
                self.rejected[key] = self.rejected.get(key, 0) + 1
        elif isinstance(event, InstanceStateChanged):
            pass  # read back from the store's transition lists at the end


def run(args) -> int:
    try:
        scenario = parse_yaml(Path(args.scenario).read_bytes(), args.scenario)
    except FileNotFoundError:
        print(f"{args.scenario}: no such file", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ScenarioError as e:
        print(e, file=sys.stderr)
        return EXIT_BAD_INPUT
    seed = scenario.seed if args.seed is None else args.seed
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else Path("runs") / f"{scenario.name}-real-seed{seed}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    run = RealRun(scenario, seed, out, progress=not getattr(args, "no_progress", False))
    try:
        summary = run.execute()
    except StartupError as e:
        print(f"run-scenario --mode real: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    manifest = {
        "scenario": scenario.name,
        "scenario_path": str(args.scenario),
        "scenario_hash": "sha256:" + hashlib.sha256(Path(args.scenario).read_bytes()).hexdigest(),
        "seed": seed,
        "mode": "real",
        "time_scale": scenario.real.time_scale,
        "key_prefix": run.config.key_prefix,
        "git_commit": git_commit(),
        "started_at": stamp,
    }
    files = report.run_files(manifest=manifest, summary=summary, store=run.final_store,
                             rpc_rows=run.recorder.rpc_rows, series=run.recorder.series)
    if not getattr(args, "no_plots", False):
        from common import plots  # matplotlib only when plots are wanted

        files.update(plots.run_figures(run.recorder.series, report.instance_rows(run.final_store),
                                       subtitle=f"{scenario.name} · real · time x{scenario.real.time_scale:g}",
                                       time_label="scenario time since start (s)"))
    for name, data in files.items():
        (out / name).write_bytes(data)
    Console(width=max(100, Console().width)).print(report.summary_renderable(summary, out))
    return EXIT_OK if summary["ok"] else EXIT_FAILED


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


class RealRun:
    def __init__(self, scenario, seed: int, out: Path, progress: bool = True, faults=()):
        """``faults``: (wall seconds after the workload starts, callable(run)) pairs, for
        fault-injection tests (e.g. SIGKILL a compute daemon mid-run)."""
        self.faults = tuple(faults)
        self.scenario = scenario
        self.seed = seed
        self.out = out
        self.show_progress = progress
        real, timing, cloud = scenario.real, scenario.timing, scenario.cloud
        self.scale = real.time_scale
        self.config = DaemonConfig(
            redis_url=real.redis_url,
            amqp_url=real.amqp_url,
            key_prefix=real.key_prefix or f"novalab-{scenario.name}-{secrets.token_hex(4)}:",
            libvirt_uri=real.libvirt_uri if real.libvirt_uri != "test" else "test:///default",
            rpc_log=str((out / "logs" / "rpc-{name}.csv").resolve()),
            instances_path=str((out / "instances").resolve()),
            workers=cloud.hosts.workers,
            report_interval=timing.report_interval,
            service_down_time=timing.service_down_time,
            periodic_interval=timing.periodic_interval,
            build_timeout=timing.build_timeout,
            time_scale=self.scale,
            time_origin=time.time(),
            scheduler_driver=cloud.scheduler if cloud.scheduler != "queue" else "simple",
            max_cores=scenario.max_cores,
            network_manager=cloud.network.manager,
            fixed_range=cloud.network.fixed_range,
            flat_network_bridge=cloud.network.bridge,
            flat_network_dns=cloud.network.dns,
            network_size=cloud.network.network_size,
            num_networks=cloud.network.num_networks,
            vlan_start=cloud.network.vlan_start,
            vpn_clients=cloud.network.vpn_clients,
            disassociate_timeout=cloud.network.disassociate_timeout,
        )
        self.hosts = [f"host{i + 1}" for i in range(real.hosts)]
        self.recorder = RealRecorder()
        self.processes: dict[str, subprocess.Popen] = {}
        self.final_store = {}

    # -- the whole run ----------------------------------------------------------------

    def execute(self) -> dict:
        started = time.perf_counter()
        store, _ = connect(self.config)  # raises StartupError naming what is missing
        self.store = store
        self.runtime = RealRuntime(store, lambda: RpcClient(self.config.amqp_url), self.recorder,
                                   time_scale=self.scale, time_origin=self.config.time_origin)
        config_path = self.out / "daemon-config.yaml"
        config_path.write_text(yaml.safe_dump(self.config.model_dump(), sort_keys=True))
        try:
            self._start_daemons(config_path)
            self._await_heartbeats()
            stop_sampling = threading.Event()
            sampler = threading.Thread(target=self._sample_until, args=(stop_sampling,), daemon=True)
            sampler.start()
            reaper_stop = threading.Event()
            reaper = threading.Thread(target=self._reap_until, args=(reaper_stop,), daemon=True)
            reaper.start()
            timers = [threading.Timer(delay, fault, args=(self,)) for delay, fault in self.faults]
            for timer in timers:
                timer.daemon = True
                timer.start()
            self._drive_workload()
            for timer in timers:
                timer.join()
            self._drain()
            stop_sampling.set()
            reaper_stop.set()
            sampler.join(5)
            reaper.join(5)
            self._sample()
            snapshot = self._snapshot()
        finally:
            self._stop_daemons()
        verdicts = invariants.check_all(snapshot)
        self._collect_rpc_rows()
        self.final_store = snapshot.store
        wall = time.perf_counter() - started
        summary = report.summarize(
            scenario=self.scenario, seed=self.seed, mode="real", store=snapshot.store, series=self.recorder.series,
            broker_stats=self._broker_stats, verdicts=verdicts, fingerprint="(real runs have no trace fingerprint)",
            sim_time=self.runtime.now() - self.config.time_origin, effects=self.runtime.effects,
            wall_seconds=wall, rejected=self.recorder.rejected,
            extra={"time_scale": self.scale, "hosts": len(self.hosts)},
        )
        self._clean_up()
        return summary

    # -- daemons --------------------------------------------------------------------

    def _start_daemons(self, config_path: Path):
        logs = self.out / "logs"
        logs.mkdir(exist_ok=True)
        kinds = [("network", "net1")] + [("compute", h) for h in self.hosts]
        if self.scenario.cloud.scheduler != "queue":
            kinds.append(("scheduler", "sched1"))
        for kind, host in kinds:
            self.start_daemon(kind, host, config_path)

    def start_daemon(self, kind: str, host: str, config_path: Path | None = None):
        config_path = config_path or self.out / "daemon-config.yaml"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if kind == "compute" and self.scenario.real.libvirt_uri == "test":
            # A private, empty test hypervisor of the scenario's host size per worker
            # (test:///default is shared and comes with a domain of its own).
            from real.libvirt_driver import LibvirtDriver

            hosts = self.scenario.cloud.hosts
            env["NOVALAB_LIBVIRT_URI"] = LibvirtDriver.test_uri_for_host(
                self.out / "nodes", host, hosts.vcpus, hosts.memory_mb
            )
        log = open(self.out / "logs" / f"{kind}-{host}.log", "ab")
        cmd = [sys.executable, "-m", "real.cli", kind, "--host", host, "--config", str(config_path)]
        self.processes[f"{kind}.{host}"] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1], env=env,
        )
        log.close()

    def kill_daemon(self, kind: str, host: str):
        """SIGKILL one daemon (fault injection): no cleanup runs in it."""
        proc = self.processes.pop(f"{kind}.{host}")
        proc.kill()
        proc.wait(STOP_TIMEOUT)

    def _await_heartbeats(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        wanted = {(kind, name.split(".", 1)[1]) for name in self.processes for kind in [name.split(".", 1)[0]]}
        while wanted:
            for kind, host in sorted(wanted):
                if self.store.execute(ZScore(keys.heartbeats(kind), host)) is not None:
                    wanted.discard((kind, host))
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise StartupError(f"daemon {name} exited with status {proc.returncode}; see {self.out}/logs")
            if not wanted:
                break
            if time.monotonic() > deadline:
                raise StartupError(f"no heartbeat from {sorted(wanted)} within {STARTUP_TIMEOUT:g} s; see {self.out}/logs")
            time.sleep(0.1)

    def _stop_daemons(self):
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.processes.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()

    # -- workload -------------------------------------------------------------------

    def _cloud(self) -> CloudController:
        cloud, timing = self.scenario.cloud, self.scenario.timing
        return CloudController(
            CloudConfig(
                scheduler=cloud.scheduler,
                instance_types={k: v.model_dump() for k, v in cloud.instance_types.items()},
                images=tuple(cloud.images),
                quotas={p.id: Quota(p.quota.instances, p.quota.cores, p.quota.floating_ips) for p in cloud.projects},
                network_call_timeout=timing.network_call_timeout,
                build_timeout=timing.build_timeout,
            ),
            network_manager(self.config),
        )

    def _drive_workload(self):
        """Issue the requests on the (compressed) wall clock; terminate each instance
        after its lifetime. Returns once every request and terminate has finished."""
        spec = self.scenario.workload
        rng = random.Random(f"{self.seed}/workload")
        cloud = self._cloud()
        self.cloud = cloud
        image = spec.image or self.scenario.cloud.images[0]
        types = sorted(spec.instance_types.items())
        projects = sorted((spec.projects or {p.id: 1.0 for p in self.scenario.cloud.projects}).items())
        total = self.scenario.real.requests or spec.requests
        due: list = []  # (wall time, seq, context, instance ids) of terminates
        pending = []
        lock = threading.Lock()
        pool = ThreadPoolExecutor(max_workers=self.scenario.cloud.api_workers, thread_name_prefix="api")
        agent = Agent("api")
        n = spec.instances_per_request

        def launch(context, itype, lifetime):
            try:
                reservation = self.runtime.drive(agent, cloud.run_instances(context, image, itype, n, n))
            except NovaError:
                return
            if lifetime is not None:
                with lock:
                    heapq.heappush(due, (time.monotonic() + lifetime / self.scale, id(reservation), context,
                                         reservation["instances"]))

        def terminate(context, ids):
            try:
                self.runtime.drive(agent, cloud.terminate_instances(context, ids))
            except NovaError:
                pass

        console = Console(stderr=True)
        next_at = time.monotonic()
        for index in range(total):
            gap = 1.0 / spec.arrivals.rate if spec.arrivals.process == "constant" else rng.expovariate(spec.arrivals.rate)
            next_at += gap / self.scale
            project = rng.choices([p for p, _ in projects], weights=[w for _, w in projects])[0]
            itype = rng.choices([t for t, _ in types], weights=[w for _, w in types])[0]
            lifetime = spec.lifetime.sample(rng) if spec.lifetime is not None else None
            self._run_due(due, lock, pool, pending, terminate, until=next_at)
            context = RequestContext(user_id=f"{project}-user", project_id=project, request_id=f"req-{index}")
            pending.append(pool.submit(launch, context, itype, lifetime))
            if self.show_progress and (index + 1) % max(1, total // 10) == 0:
                console.print(f"{index + 1}/{total} requests issued")
        for future in list(pending):
            future.result()
        while True:
            with lock:
                if not due:
                    break
                wake = due[0][0]
            self._run_due(due, lock, pool, pending, terminate, until=wake)
        for future in pending:
            future.result()
        pool.shutdown(wait=True)

    @staticmethod
    def _run_due(due, lock, pool, pending, terminate, until: float):
        """Sleep until ``until``, submitting every terminate that falls due meanwhile."""
        while True:
            with lock:
                head = due[0] if due else None
            now = time.monotonic()
            if head is not None and head[0] <= min(now, until):
                with lock:
                    _, _, context, ids = heapq.heappop(due)
                pending.append(pool.submit(terminate, context, ids))
                continue
            if now >= until:
                return
            time.sleep(min(until - now, 0.05, max(0.0, head[0] - now) if head else 0.05))

    def _reap_until(self, stop: threading.Event):
        agent = Agent("api-reaper")
        while not stop.wait(self.scenario.timing.periodic_interval / self.scale):
            try:
                self.runtime.drive(agent, self._cloud().reap_stuck_builds(SYSTEM))
            except NovaError:
                pass  # next period tries again

    def _drain(self):
        deadline = time.monotonic() + self.scenario.drain_timeout / self.scale
        while time.monotonic() < deadline:
            building = self.store.execute(ZRangeByScore(keys.BUILDING, "-inf", "+inf", 1))
            depths = self._queue_depths()
            if not building and not any(depths.values()):
                return
            time.sleep(DRAIN_POLL)

    # -- observation --------------------------------------------------------------

    def _queue_names(self):
        names = ["compute", "network", "network.net1"] + [rpc.host_topic("compute", h) for h in self.hosts]
        if self.scenario.cloud.scheduler != "queue":
            names += ["scheduler", "scheduler.sched1"]
        return names

    def _queue_depths(self) -> dict:
        return transport.queue_depths(self.config.amqp_url, self._queue_names())

    def _sample_until(self, stop: threading.Event):
        interval = self.scenario.metrics.interval / self.scale
        while not stop.wait(interval):
            self._sample()

    def _sample(self):
        now = self.runtime.now() - self.config.time_origin
        add = self.recorder.series.append
        depths = self._queue_depths()
        self._track_peaks(depths)
        host_sum = host_max = 0
        for queue, depth in sorted(depths.items()):
            topic, dot, _ = queue.partition(".")
            if dot:
                host_sum += depth
                host_max = max(host_max, depth)
            else:
                add((now, "queue_depth", topic, depth))
        add((now, "queue_depth", "compute.<host> (sum)", host_sum))
        add((now, "queue_depth", "compute.<host> (max)", host_max))
        for spec in network.plan(self.config.network_config()):
            add((now, "pool_free", spec.network_id, self.store.execute(SCard(keys.available(spec.network_id)))))
            add((now, "pool_size", spec.network_id, len(spec.addresses)))
        counts = {}
        for instance_id in self.store.execute(SMembers(keys.INSTANCES)):
            state = self.store.execute(HGet(keys.instance(instance_id), "state"))
            counts[state] = counts.get(state, 0) + 1
        for state in lifecycle.STATES:
            add((now, "instances", state, counts.get(state, 0)))
        claimed = dict(self.store.execute(ZRangeByScore(keys.COMPUTE_CORES, "-inf", "+inf")))
        capacity = self.scenario.cloud.hosts.vcpus
        total = capacity * len(self.hosts)
        add((now, "host_vcpu_use", "all (fraction)", sum(claimed.values()) / total if total else 0.0))
        add((now, "host_vcpu_use", "max host (fraction)", max(claimed.values(), default=0) / capacity))
        add((now, "hosts_overcommitted", "vcpus", sum(1 for v in claimed.values() if v > capacity)))

    def _track_peaks(self, depths):
        stats = getattr(self, "_stats", None)
        if stats is None:
            stats = self._stats = {}
        for queue, depth in depths.items():
            entry = stats.setdefault(queue, {"published": 0, "peak_depth": 0, "wait_p95": None, "depth": 0, "unacked": 0})
            entry["peak_depth"] = max(entry["peak_depth"], depth)
            entry["depth"] = depth

    @property
    def _broker_stats(self):
        return getattr(self, "_stats", {})

    def _snapshot(self) -> invariants.Snapshot:
        client = RpcClient(self.config.amqp_url)
        domains = {}
        try:
            for host in self.hosts:
                try:
                    domains[host] = client.call(rpc.host_topic("compute", host), "list_domains", {}, SYSTEM,
                                                timeout=AUDIT_CALL_TIMEOUT)
                except NovaError as e:
                    domains[host] = {}
                    print(f"audit: cannot list domains on {host}: {e}", file=sys.stderr)
        finally:
            client.close()
        depths = self._queue_depths()
        return invariants.Snapshot(
            now=self.runtime.now(),
            build_timeout=self.scenario.timing.build_timeout,
            store=self.store.dump(),
            domains=domains,
            # After the drain every consumer is idle, so nothing is unacknowledged.
            queues={q: {"ready": d, "unacked": 0} for q, d in depths.items()},
        )

    def _collect_rpc_rows(self):
        rows = []
        for path in sorted((self.out / "logs").glob("rpc-*.csv")):
            with open(path, newline="") as f:
                rows.extend(csv.reader(f))
        rows.sort(key=lambda row: float(row[5]))  # by the time handling started
        self.recorder.rpc_rows.extend(rows)

    def _clean_up(self):
        transport.delete_queues(self.config.amqp_url, self._queue_names())
        self.store.flush()
        self.runtime.close()
        self.store.close()

