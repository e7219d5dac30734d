"""``run-scenario --mode real``: the scenario's workload against live services.

Theory of operation
-------------------
1. Check the configuration (real/site.py) and that Redis and RabbitMQ answer (a Redis of
   the run's own when the fault plan has a store fault: real.store_faults); write a
   daemon configuration into the run directory (a fresh key prefix, the scenario's
   timing compressed by ``real.time_scale``; ``--config FILE`` overrides it). flat: the
   network in the records only (``bind_floating: false``, ``net_records_only``);
   flatdhcp and vlan: every host's networking, a guest end per instance and the floating
   addresses are real, in network namespaces of the run's own (real.run_network).
2. Start a private slapd under ``<run>/ldap`` and fill the directory: an ``operator``
   user manages every scenario project, and each project gets one workload user,
   ``<project>-user``, a member with the sysadmin and netadmin roles (global and in the
   project: RunInstances, TerminateInstances and the address actions need them).
3. Start the daemons as processes, exactly as an operator would: ``real.hosts`` compute
   workers (each its own libvirt connection), ``cloud.network.hosts`` network workers and
   ``cloud.schedulers`` schedulers (none when the scenario dispatches by queue), named
   and competing on their topics as in the sim. Wait for their heartbeats. With ``libvirt_uri: test``
   each compute gets a private test-driver node of the scenario's host size.
4. Start the EC2 API in this process (``real.api.ApiServer`` on a free port of
   127.0.0.1, ``cloud.api_workers`` threads, the scenario's quotas and instance types;
   its build-timeout reaper is the API's periodic task). The scenario's images are
   registered public with no bytes to fetch: no object store runs, so
   ``cloud.image_size_mb`` is not modelled here. Its access log is
   ``<run>/logs/api-access.log``.
5. Drive the workload through the API: the same effect generator as the sim's
   (``common.workload``), driven by the real runner. Every ``ApiCall`` is a signed HTTP
   request (Signature Version 4, ``real.ec2_client``) as that project's user, each
   launch a thread of its own (``real.tasks``). Sleeps are divided by the time scale;
   requests are stamped with the run's compressed clock, which the API reads too. The
   scenario's ``faults`` play on
   timers from the same start: a kill is a SIGKILL of the daemon, a restart starts it
   again (it reconciles its host on start-up); store faults act on the run's own Redis
   (real.store_faults), a broker outage is kill -9 and restart of the run's own RabbitMQ
   node (real.broker_faults); hypervisor faults are sim-only and are skipped with a warning.
6. Drain: wait until no instance is building and the queues are empty (bounded).
7. Audit: dump the store, ask each compute for its domains over RPC, read queue depths
   from RabbitMQ, run the same invariant checkers as the sim, write the same run
   directory, print the same summary, plus the API's numbers (``summary.json``'s
   ``api``: requests, requests per wall second during the workload, latency by
   action, error answers by code).
8. Clean up what it created: stop the API, the daemons (SIGTERM, then SIGKILL after a
   bound) and slapd, delete the run's queues and store keys, stop the run's own Redis.

``--production`` (or ``production: true`` in ``--config``) takes none of these
shortcuts: real/site.py says what a run on a real site needs and does differently.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import logging
import random
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from common import assembly, images, invariants, keys, lifecycle, network, parking, rpc
from common.analysis import report
from common.cloud import LEFTOVER_PROBES, CloudController
from common.context import SYSTEM
from common.directory import Directory, valid_name
from common.effects import ApiEffect, DirectoryEffect, HGet, SCard, SMembers, ZRangeByScore
from common.errors import NovaError
from common.events import RequestRejected
from common.scenario import ScenarioError, calibration_entry
from common.workload import WORKLOAD_STREAM, Workload, workload_user
from real import (
    broker_faults,
    mode_faults,
    mode_webhooks,
    processes,
    scenario_file,
    site,
    store_faults,
    tasks,
    transport,
    vhosts,
)
from real import images as image_store
from real.config import ConfigError, DaemonConfig
from real.ec2_client import HttpApi
from real.outage import Outage
from real.run_network_audit import Networking
from real.runner import Agent, RealRuntime
from real.site import run_config
from real.startup import StartupError, connect, rpc_client

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

#: Wall seconds to wait for every daemon's first heartbeat.
STARTUP_TIMEOUT = 60.0
#: Wall seconds a daemon gets to stop after SIGTERM before SIGKILL.
STOP_TIMEOUT = 15.0
#: Wall seconds between two checks for quiescence while draining.
DRAIN_POLL = 0.5
#: Wall seconds for one list_domains call during the audit.
AUDIT_CALL_TIMEOUT = 10.0
#: Wall seconds a workload request may take before the client gives up on it.
API_REQUEST_TIMEOUT = 60.0


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


def run(args) -> int:
    try:
        scenario, raw = scenario_file.load(args.scenario)
        given = site.site_config(getattr(args, "config", None), getattr(args, "production", False))
    except (ScenarioError, ConfigError) as e:
        print(e, file=sys.stderr)
        return EXIT_BAD_INPUT
    seed = scenario.seed if args.seed is None else args.seed
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else Path("runs") / f"{scenario.name}-real-seed{seed}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    args.run_dir = str(out)  # where run-scenario finds the run to compare with the sim
    run = RealRun(scenario, seed, out, progress=not getattr(args, "no_progress", False), site=given)
    try:
        summary = run.execute()
    except StartupError as e:
        print(f"run-scenario --mode real: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    manifest = report.manifest(
        scenario=scenario, scenario_path=args.scenario,
        scenario_hash="sha256:" + hashlib.sha256(raw).hexdigest(), seed=seed,
        mode="real", started_at=stamp, provenance=getattr(args, "provenance", None) or {},
        time_scale=scenario.real.time_scale, key_prefix=run.config.key_prefix,
        calibration=calibration_entry(scenario, lambda name: (Path(args.scenario).parent / name).read_bytes()),
    )
    files = report.run_files(manifest=manifest, summary=summary, store=run.final_store,
                             rpc_rows=run.recorder.rpc_rows, series=run.recorder.series,
                             plots=not getattr(args, "no_plots", False),
                             subtitle=f"{scenario.name} · real · time x{scenario.real.time_scale:g}",
                             time_label="scenario time since start (s)")
    for name, data in files.items():
        (out / name).write_bytes(data)
    console = Console(width=max(100, Console().width))
    console.print(report.summary_renderable(summary, out))
    api = summary.get("api") or {}
    if api.get("requests"):
        latency = ", ".join(f"{action} p50 {1000 * v['p50_s'] / scenario.real.time_scale:.0f} ms"
                            for action, v in api["by_action"].items())
        console.print(f"API: {api['requests']:,} signed requests in {api['workload_wall_seconds']:.1f} s "
                      f"({api['requests_per_second']:.1f}/s); {latency}")
    return EXIT_OK if summary["ok"] else EXIT_FAILED


class RealRun:
    def __init__(self, scenario, seed: int, out: Path, progress: bool = True, faults=(),
                 site: DaemonConfig | None = None, own_broker: bool = False):
        """``faults``: (wall seconds after the workload starts, callable(run)) pairs, for
        fault-injection tests (e.g. SIGKILL a compute daemon mid-run). ``site``: see
        real.site.run_config; ``own_broker``: see real.broker_faults.start_for."""
        self.faults = tuple(faults)
        #: (scenario seconds since the workload began, what) of each fault-plan step.
        self.fault_log: list[tuple[float, str]] = []
        self.workload_origin = 0.0  # runtime.now() when the workload starts
        self.scenario = scenario
        self.seed = seed
        self.out = out
        self.show_progress = progress
        real = scenario.real
        self.scale = real.time_scale
        self.config = DaemonConfig.from_scenario(
            scenario,
            key_prefix=real.key_prefix or f"novalab-{scenario.name}-{secrets.token_hex(4)}:",
            libvirt_uri=real.libvirt_uri if real.libvirt_uri != "test" else "test:///default",
            rpc_log=str((out / "logs" / "rpc-{name}.csv").resolve()),
            instances_path=str((out / "instances").resolve()),
            time_origin=time.time(),
        )
        self.config = run_config(self.config, site)
        self.production = self.config.production
        self.roster = assembly.roster(scenario, real.hosts)
        #: The run's namespaces, guests and network audit (flatdhcp, vlan; real.run_network),
        #: unless production or ``--config`` says where the network goes (netns, records only).
        given = site.model_fields_set & {"netns", "net_records_only"} if site is not None else set()
        self.networking = Networking(scenario, self.roster, out, not self.production and not given)
        self.config = self.config.model_copy(update=self.networking.daemon_settings())
        self.hosts = [spec.host for spec in self.roster if spec.topic == assembly.COMPUTE]
        self.recorder = RealRecorder()
        self.processes: dict[str, subprocess.Popen] = {}
        self.final_store: Any = {}
        self.slapd: Any = None  # a PrivateSlapd once started
        self.server: Any = None  # the ApiServer once started
        self.redis: Any = None  # the run's own PrivateRedis, for store faults
        self.http: HttpApi | None = None  # the workload's client once it drives
        #: Most requests seen waiting for an API server thread (sampled).
        self.api_queue_peak = 0
        #: directory user -> (access key, secret key).
        self.credentials = {user: (secrets.token_hex(10), secrets.token_urlsafe(30))
                            for user in assembly.directory_users(scenario)}
        self.workload = Workload(scenario, random.Random(f"{seed}/{WORKLOAD_STREAM}"), real.requests)
        self.own_broker: Any = own_broker  # True: start one (real.broker_faults); then the node
        self.workload_seconds = 0.0
        self.receivers: mode_webhooks.RunReceivers | None = None

    # -- the whole run ----------------------------------------------------------------

    def execute(self) -> dict:
        """The whole run (module docstring); -> the summary. Stops the run's own Redis, if any."""
        try:
            return self._execute()
        finally:
            if self.redis is not None:
                self.redis.stop()

    def _execute(self) -> dict:
        started = time.perf_counter()
        site.check(self.config, "run")  # raises StartupError naming every setting to fix
        plan = self._fault_plan()  # raises StartupError for a plan real mode cannot play
        self.redis, self.config = store_faults.start(self.scenario, self.out, self.config)
        store, _ = broker_faults.connect_for(self, connect)  # raises StartupError naming what is missing
        self.store = store
        if not self.own_broker:  # the run's own node has no other users
            self._isolate_queues()
        self.runtime = RealRuntime(store, lambda: rpc_client(self.config), self.recorder,
                                   time_scale=self.scale, time_origin=self.config.time_origin)
        config_path = self.out / "daemon-config.yaml"
        # The daemons never use the directory: its password stays out of the run directory.
        config_path.write_text(yaml.safe_dump(self.config.model_dump(exclude={"ldap_password"}), sort_keys=True))
        finished, keeping = False, threading.Event()
        try:
            self.networking.start(store)
            self._start_directory()
            self.receivers = mode_webhooks.start(self.scenario, self.runtime, self.seed)
            self._start_daemons(config_path)
            self._await_heartbeats()
            self._start_api()
            keeping = store_faults.keep_images(self)  # the default images, after a store wipe
            stop_sampling = threading.Event()
            sampler = threading.Thread(target=self._sample_until, args=(stop_sampling,), daemon=True)
            sampler.start()
            self.workload_origin = self.runtime.now()
            timers = [threading.Timer(delay, fault, args=(self,)) for delay, fault in self.faults + plan]
            for timer in timers:
                timer.daemon = True
                timer.start()
            self._drive_workload()
            for timer in timers:
                timer.join()
            self._drain()
            stop_sampling.set()
            sampler.join(5)
            self._sample()
            snapshot = self._snapshot()
            self.networking.audit(snapshot.store, self.out / "logs")
            finished = True
        finally:
            keeping.set()
            self._stop_api()
            self._stop_daemons()
            self._stop_directory()
            if self.receivers is not None:
                self.receivers.stop()
            self.networking.stop()
            if not finished:  # a refusal or a crash: still remove the run's queues and keys
                try:
                    self._clean_up()
                except Exception as e:
                    print(f"run-scenario --mode real: cleaning up after a failed run: {e}", file=sys.stderr)
        verdicts = invariants.check_all(snapshot) + self.networking.verdicts
        self._collect_rpc_rows()
        self.final_store = snapshot.store
        wall = time.perf_counter() - started
        summary = report.summarize(
            scenario=self.scenario, seed=self.seed, mode="real", store=snapshot.store, series=self.recorder.series,
            broker_stats=self._broker_stats, verdicts=verdicts, fingerprint="(real runs have no trace fingerprint)",
            sim_time=self.runtime.now() - (self.config.time_origin or 0.0), effects=self.runtime.effects,
            wall_seconds=wall, rejected=self.recorder.rejected,
            extra={"time_scale": self.scale, "hosts": len(self.hosts), "api": self.api_summary(),
                   "stranded_messages": invariants.stranded_messages(snapshot),
                   "faults": [{"at": at, "what": what} for at, what in sorted(self.fault_log)],
                   **(self.receivers.summary(snapshot.store) if self.receivers is not None else {}),
                   **({"network": self.networking.report} if self.networking.report else {})},
        )
        self._clean_up()
        return summary

    # -- the directory --------------------------------------------------------------

    def _start_directory(self):
        """A private slapd with the operator, the projects and their workload users; in
        production the site's directory, where each project's workload user must be."""
        from real.directory import LdapDirectory
        from real.slapd import PrivateSlapd, SlapdError

        projects = [p.id for p in self.scenario.cloud.projects]
        bad = [p for p in projects if not valid_name(p) or not valid_name(workload_user(p))]
        if bad:
            raise StartupError(f"project ids {', '.join(bad)} are not directory names "
                               "([A-Za-z0-9][A-Za-z0-9._-]*, at most 58 characters)")
        if self.production:
            self.credentials = site.workload_credentials(self.config, [workload_user(p) for p in projects])
            return
        try:
            self.slapd = PrivateSlapd(self.out / "ldap").start()
        except SlapdError as e:
            raise StartupError(f"cannot start a private slapd: {e}") from None
        self.config = self.config.model_copy(update={
            "ldap_url": self.slapd.url, "ldap_bind_dn": self.slapd.bind_dn, "ldap_password": self.slapd.password,
            "ldap_root": self.slapd.root})
        with LdapDirectory(self.slapd.url, self.slapd.bind_dn, self.slapd.password) as ldap:
            ldap.run(assembly.populate_directory(Directory(self.slapd.root), self.scenario, self.credentials))

    def _stop_directory(self):
        if self.slapd is not None:
            self.slapd.stop()

    # -- the API --------------------------------------------------------------------

    def _start_api(self):
        from common.ec2 import Ec2Api
        from real import directory as ldap
        from real.api import ApiServer, install_keypairs

        directory, self._ldap = ldap.from_config(self.config)
        self.runtime.register(DirectoryEffect, self._ldap)
        install_keypairs(self.runtime)
        # No object store runs here: the scenario's images are registered with no bytes
        # to fetch (common.images), and RegisterImage says there is no store.
        image_store.install_client(self.runtime, None, ("", ""))
        self.runtime.drive(Agent("setup"), images.register_defaults(self.scenario.cloud.images, from_objects=False))
        settings = assembly.Settings.from_scenario(self.scenario)
        api = Ec2Api(CloudController(settings.cloud, network.make_manager(settings.network)), directory)
        access_log = open(self.out / "logs" / "api-access.log", "a", buffering=1)  # noqa: SIM115 - open for the whole run
        log_lock = threading.Lock()

        def write(line):
            with log_lock:
                access_log.write(line + "\n")

        self._access_log = access_log
        self.server = ApiServer(api, self.runtime, host="127.0.0.1", port=0,
                                threads=self.scenario.cloud.api_workers,
                                reap_interval=self.scenario.timing.periodic_interval, access_log=write).start()

    def _stop_api(self):
        if self.server is not None:
            self.server.stop()
            self._access_log.close()
            self._ldap.close()

    def api_summary(self) -> dict:
        return {"url": self.server.url if self.server is not None else None,
                "client": "real.ec2_client (Signature Version 4 over http.client)",
                **self.workload.api_summary(self.workload_seconds), "admission_queue_peak": self.api_queue_peak}

    # -- daemons --------------------------------------------------------------------

    def _start_daemons(self, config_path: Path):
        for spec in self.roster:
            self.start_daemon(spec.topic, spec.host, config_path)

    def start_daemon(self, kind: str, host: str, config_path: Path | None = None):
        config_path = config_path or self.out / "daemon-config.yaml"
        env = self.networking.daemon_env(kind, host)
        if kind == "compute" and not self.production and self.config.libvirt_uri == "test:///default":
            # A private, empty test hypervisor of the scenario's host size per worker
            # (test:///default is shared and comes with a domain of its own).
            from real.libvirt_driver import LibvirtDriver

            hosts = self.scenario.cloud.hosts
            env["NOVALAB_LIBVIRT_URI"] = LibvirtDriver.test_uri_for_host(
                self.out / "nodes", host, hosts.vcpus, hosts.memory_mb
            )
        self.processes[f"{kind}.{host}"] = processes.start_daemon(kind, host, config_path, self.out / "logs", env=env)

    def _fault_plan(self) -> tuple:
        """The scenario's ``faults`` as (wall seconds, callable(run)) pairs (``mode_faults``)."""
        return mode_faults.plan(self)

    def _play_fault(self, action: str, kind: str, host: str):
        """One step of the scenario's fault plan, logged for the summary as the sim does."""
        if action == "kill":
            self.kill_daemon(kind, host)
        else:
            self.start_daemon(kind, host)
        self.note(f"{'killed' if action == 'kill' else 'restarted'} {kind}.{host}")

    def note(self, what: str):
        """Log one step of the fault plan, at its scenario time since the workload began."""
        self.fault_log.append((round(self.runtime.now() - self.workload_origin, 3), what))

    def _webhook_outage(self, fault):
        """Every receiver answers 503 for the fault's scenario seconds, logged like the sim's."""
        assert self.receivers is not None  # the scenario validates: an outage needs receivers
        self.receivers.outage(fault.webhook_outage / self.scale)
        self.note(fault.describe())

    def _publish_poison(self, topic: str, body: bytes, what: str):
        """A poison fault: the body as it is onto the run's own vhost, logged like the sim's."""
        transport.publish_raw(self.config.amqp_url, topic, body)
        self.note(what)

    def kill_daemon(self, kind: str, host: str):
        """SIGKILL one daemon (fault injection): no cleanup runs in it."""
        proc = self.processes.pop(f"{kind}.{host}")
        proc.kill()
        proc.wait(STOP_TIMEOUT)

    def _await_heartbeats(self):
        wanted = {tuple(name.split(".", 1)): proc for name, proc in self.processes.items()}
        try:
            processes.wait_for_heartbeats(self.store, wanted, STARTUP_TIMEOUT)
        except processes.DeployError as e:
            raise StartupError(f"{e}; see {self.out}/logs") from None

    def _stop_daemons(self):
        processes.stop_processes(self.processes.values(), STOP_TIMEOUT)
        self.processes.clear()

    # -- workload -------------------------------------------------------------------

    def _drive_workload(self):
        """Drive the shared workload generator through the API (module docstring, step 5)."""
        by_project = {p.id: self.credentials[workload_user(p.id)] for p in self.scenario.cloud.projects}
        http = self.http = HttpApi(self.server.url, by_project, clock=self.runtime.now, timeout=API_REQUEST_TIMEOUT)
        self.runtime.register(ApiEffect, http)
        pool = tasks.install(self.runtime)
        began = time.monotonic()
        try:
            self.runtime.drive(Agent("workload"), self.workload.run())
        finally:
            pool.shutdown()
            http.close()
        self.workload_seconds = time.monotonic() - began

    def _drain(self):
        deadline = time.monotonic() + self.scenario.drain_timeout / self.scale
        while time.monotonic() < deadline:
            building = self.store.execute(ZRangeByScore(keys.BUILDING, "-inf", "+inf", 1))
            leftovers = any(self.store.execute(probe) for probe in LEFTOVER_PROBES)
            depths = self._queue_depths()
            hooks = self.receivers is not None and self.receivers.pending(self.store)
            if not building and not leftovers and not any(depths.values()) and not hooks:
                return
            time.sleep(DRAIN_POLL)

    # -- observation --------------------------------------------------------------

    def _queue_names(self):
        return assembly.queue_names(self.roster)

    def _queue_depths(self) -> dict:
        return transport.queue_depths(self.config.amqp_url, self._queue_names())

    def _sample_until(self, stop: threading.Event):
        """The metrics sampler thread: a sample that fails (broker or store away for a
        moment) is skipped, said once per outage, and the next one tried."""
        interval = self.scenario.metrics.interval / self.scale
        console = Console(stderr=True)
        self.sampler_outage = Outage(log, "run-scenario --mode real: metrics sampling")
        while not stop.wait(interval):
            self.sampler_outage.run(self._sample)
            if self.show_progress:
                console.print(f"{self.workload.issued}/{self.workload.total} requests issued, "
                              f"{self.workload.finished} launches settled")

    def _sample(self):
        now = self.runtime.now() - self.config.time_origin
        add = self.recorder.series.append
        # A queue missing for a moment (deleted by another run on a shared vhost) holds nothing.
        depths = {queue: depth or 0 for queue, depth in self._queue_depths().items()}
        self._track_peaks(depths)
        self.recorder.series.extend(report.queue_depth_rows(now, depths))
        for spec in network.plan(self.config.network_config()):
            add((now, "pool_free", spec.network_id, self.store.execute(SCard(keys.available(spec.network_id)))))
            add((now, "pool_size", spec.network_id, len(spec.addresses)))
        counts = {}
        for instance_id in self.store.execute(SMembers(keys.INSTANCES)):
            state = self.store.execute(HGet(keys.instance(instance_id), "state"))
            counts[state] = counts.get(state, 0) + 1
        for state in lifecycle.STATES:
            add((now, "instances", state, counts.get(state, 0)))
        claimed = {host: parking.claimed(score)
                   for host, score in self.store.execute(ZRangeByScore(keys.COMPUTE_CORES, "-inf", "+inf"))}
        capacity = self.scenario.cloud.hosts.vcpus
        total = capacity * len(self.hosts)
        add((now, "host_vcpu_use", "all (fraction)", sum(claimed.values()) / total if total else 0.0))
        add((now, "host_vcpu_use", "max host (fraction)", max(claimed.values(), default=0) / capacity))
        add((now, "hosts_overcommitted", "vcpus", sum(1 for v in claimed.values() if v > capacity)))
        if self.server is not None and self.http is not None:
            # The server knows the requests its threads serve; the client, those it sent:
            # the difference waits in the server's accept queue (its admission queue).
            serving = self.server.app.in_flight
            waiting = max(0, self.http.outstanding - serving)
            self.api_queue_peak = max(self.api_queue_peak, waiting)
            add((now, "api_queue", "waiting", waiting))
            add((now, "api_queue", "in service", serving))

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
        client = rpc_client(self.config)
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
            service_down_time=self.scenario.timing.service_down_time,
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

    def _isolate_queues(self):
        """Queue names are the 2010 topic names, so two runs on one vhost would take each
        other's messages: a run gets a vhost of its own when the broker is local and
        ``rabbitmqctl`` is at hand (otherwise it shares the configured one, and says so)."""
        self.vhost = f"novalab-{self.config.key_prefix.rstrip(':')}"
        try:
            url = vhosts.private_vhost(self.config.amqp_url, self.vhost)
        except vhosts.VhostError as e:
            raise StartupError(str(e)) from None
        if url is None:
            self.vhost = None
            print("run-scenario --mode real: no private RabbitMQ vhost (not a local broker, or no rabbitmqctl): "
                  "a second run on the same vhost would take this run's messages", file=sys.stderr)
            return
        self.config = self.config.model_copy(update={"amqp_url": url})

    def _clean_up(self):
        if not broker_faults.stop_for(self):  # the run's own node goes with its queues
            transport.delete_queues(self.config.amqp_url, self._queue_names())
        if getattr(self, "vhost", None):
            vhosts.delete_vhost(self.vhost)
        self.store.flush()
        self.runtime.close()
        self.store.close()


