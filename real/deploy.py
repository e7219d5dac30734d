"""``novalab deploy up|down|status``: a whole real-mode cloud on one machine.

    novalab deploy up     [--dir DIR] [--computes N] [--network-workers N] [--schedulers N]
                          [--api-port P] [--s3-port P]
    novalab deploy status [--dir DIR]
    novalab deploy down   [--dir DIR]

``up`` checks that Redis and RabbitMQ answer and that slapd and libvirt-python are
installed (naming the set-up script that installs what is missing), then:

1. writes ``DIR/nova.yaml``, the one configuration every process reads: a fresh store
   key prefix; a private RabbitMQ vhost when the broker is local and ``rabbitmqctl``
   may make one (otherwise the shared vhost), with durable delivery; the directory of a private slapd under
   ``DIR/ldap``; a flat network (``fixed_range``, default 10.0.0.0/24) with floating
   addresses (``floating_range``, default 203.0.113.0/28, TEST-NET-3) seeded on the
   network host ``net1`` and kept in the records only (``bind_floating: false``: no
   interface or iptables rule of the machine is touched); RunInstances through the
   scheduler; the EC2 API on ``api_port`` (8773) and the object store on
   ``objectstore_port`` (3333), both on 127.0.0.1, with buckets under ``DIR/buckets``;
2. starts the private slapd (and creates the directory's base entries, what
   ``novalab manage init`` does), then the processes of real.deploy_roster:
   ``novalab network`` x ``--network-workers`` (``net1``..), ``novalab compute`` x
   ``--computes`` (``host1``.., each with a private libvirt test-driver node of
   ``--vcpus``/``--memory-mb``), ``novalab scheduler`` x ``--schedulers`` (``sched1``..),
   ``novalab api`` and ``novalab objectstore --config`` as background processes, each
   with its log in ``DIR/logs/<name>.log`` and its pid in ``DIR/run/<name>.pid``;
3. waits (bounded by ``--timeout``) until every worker has sent a heartbeat and both
   HTTP services answer; uploads and registers the default images (``images``, public,
   fetched by the computes as the admin ``novalab``: real.deploy_images); prints the
   URLs and the commands to go on with.

Settings that are not the deployment's own (Redis and RabbitMQ URLs, ports, ranges,
quotas, images, intervals...) can be given as ``NOVALAB_<SETTING>`` variables when
running ``up`` (real/config.py lists them); they are written into ``nova.yaml``, and
the processes read only that file.

``down`` stops every process (SIGTERM; SIGKILL after ``STOP_TIMEOUT`` seconds), deletes
the deployment's queues (or its vhost) and store keys, and removes what it made under
DIR (directory data, buckets, instances, pid files, nova.yaml), keeping ``DIR/logs``.
``status`` lists the processes, whether each runs, and each worker's last heartbeat.

Exit status: 0 done (``status``: everything runs), 1 a process did not come up
(``status``: something is not running, or nothing is deployed in DIR), 2 bad input, a
port in use, or a service or package it needs is missing.

What the tests and real runs share with it is in real.processes and real.vhosts.

*Not supported*: more than one machine, FlatDHCP or VLAN (they need a network
namespace of their own: see tests/real/test_ec2_api.py for one made by hand), TLS,
restarting a single daemon (``down`` and ``up`` again; the directory starts empty),
production (refused, status 2: a site runs its daemons, README "Run it for real").
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from real import deploy_images, deploy_roster
from real.processes import (
    STOP_TIMEOUT,
    DeployError,
    answers,
    daemon_env,
    log_tail,
    pid_alive,
    port_free,
    spawn,
    wait_for_heartbeats,
)
from real.vhosts import VhostError, delete_vhost, make_vhost

DEFAULT_DIR = "/tmp/novalab"
#: Seconds ``up`` waits for heartbeats and answers.
START_TIMEOUT = 60.0
STATE_FILE = "deploy.json"
CONFIG_FILE = "nova.yaml"
#: What ``down`` removes under DIR (logs/ stays).
MADE = ("ldap", "buckets", "instances", "nodes", "networks", "run", CONFIG_FILE, STATE_FILE)
#: The settings of a deployment that NOVALAB_* variables may change (defaults here).
DEFAULTS = {
    "fixed_range": "10.0.0.0/24",
    "floating_range": "203.0.113.0/28",
    "report_interval": 5.0,
    "service_down_time": 30.0,
    "periodic_interval": 30.0,
    "build_timeout": 300.0,
    "workers": 4,
    "api_listen": "127.0.0.1",
    "objectstore_listen": "127.0.0.1",
    "durable_delivery": True,  # a broker restart loses no accepted message (README, Durable delivery)
}
SETUP = {
    "services": "bash real/setup/services.sh",
    "libvirt": "bash real/setup/libvirt.sh",
    "slapd": "bash real/setup/slapd.sh",
}


class Deployment:
    """The deployment in ``directory`` (see the module docstring)."""

    def __init__(self, directory, out=None, err=None):
        self.dir = Path(directory).expanduser().resolve()
        self._out = out
        self._err = err

    @property
    def out(self):
        return self._out or sys.stdout

    @property
    def err(self):
        return self._err or sys.stderr

    # -- paths and state ------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def pid_path(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.pid"

    def state(self) -> dict | None:
        try:
            return json.loads((self.dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None

    def _save_state(self, state: dict) -> None:
        path = self.dir / STATE_FILE
        path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")

    def pid(self, name: str) -> int | None:
        try:
            return int(self.pid_path(name).read_text().strip())
        except (OSError, ValueError):
            return None

    def marker(self, name: str) -> str:
        """What the command line of process ``name`` holds (a recycled pid does not)."""
        if name == "slapd":
            return str(self.dir / "ldap" / "slapd.d") + " "
        return str(self.config_path) + " "  # the last argument: --config PATH

    def running(self, name: str) -> bool:
        pid = self.pid(name)
        return pid is not None and pid_alive(pid, self.marker(name))

    def _record(self, name: str, pid: int) -> None:
        path = self.pid_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{pid}\n")

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def _config(self):
        from real import config as config_module

        return config_module.load(str(self.config_path), {})

    # -- up ---------------------------------------------------------------------------

    def up(self, computes: int = 2, api_port: int | None = None, s3_port: int | None = None, vcpus: int = 16,
           memory_mb: int = 32768, timeout: float = START_TIMEOUT, environ=os.environ, network_workers: int = 1,
           schedulers: int = 1) -> int:
        state = self.state()
        if state is not None:
            names = state.get("processes", [])
            if names and all(self.running(n) for n in names):
                self.say(f"novalab deploy: already up in {self.dir}")
                self._print_endpoints(self._config())
                return 0
            print(f"novalab deploy: a deployment in {self.dir} is not (all) running; taking it down first",
                  file=self.err)
            if self.down() != 0:
                return 2
        try:
            for flag, count in (("--computes", computes), ("--network-workers", network_workers),
                                ("--schedulers", schedulers)):
                if count < 1:
                    raise DeployError(f"{flag} must be at least 1")
            self._check_packages()
        except DeployError as e:
            print(f"novalab deploy: {e}", file=self.err)
            return e.status
        self.dir.mkdir(parents=True, exist_ok=True)
        self._tag = secrets.token_hex(4)
        state = {"tag": self._tag, **deploy_roster.plan(computes, network_workers, schedulers), "vhost": None,
                 "processes": [], "created": time.time()}
        self._save_state(state)
        started: dict[str, subprocess.Popen] = {}
        try:
            config = self._write_config(api_port, s3_port, environ)
            self._check_services(config)
            slapd = self._start_slapd(config)
            state["processes"].append("slapd")
            self._save_state(state)
            config = self._finish_config(config, slapd, state, vcpus, memory_mb)
            workers = self._start_all(vcpus, memory_mb, started, state)
            self._wait(config, workers, started, timeout)
            registered = deploy_images.register_default_images(config)
        except DeployError as e:
            print(f"novalab deploy: {e}", file=self.err)
            if started or self.running("slapd"):
                print("novalab deploy: stopping what was started", file=self.err)
            self.down(quiet=True)
            return e.status
        except BaseException:
            self.down(quiet=True)
            raise
        self.say(f"novalab deploy: up in {self.dir}: {len(started)} daemons and slapd; images {', '.join(registered)}")
        self._print_endpoints(config)
        self._print_next(config)
        return 0

    def _check_packages(self) -> None:
        from real.slapd import SlapdMissing, _find

        try:
            _find("slapd")
            _find("slapadd")
        except SlapdMissing as e:
            raise DeployError(str(e)) from None
        try:
            import libvirt  # noqa: F401
        except ImportError as e:
            raise DeployError(f"libvirt-python is missing ({e}): run {SETUP['libvirt']}") from None
        try:
            import cheroot  # noqa: F401
            import ldap3  # noqa: F401
        except ImportError as e:
            raise DeployError(f"a Python package is missing ({e}): pip install -e .") from None

    def _write_config(self, api_port, s3_port, environ):
        """nova.yaml without the directory yet (its password comes with slapd)."""
        from real import config as config_module

        self.config_path.write_text(yaml.safe_dump(DEFAULTS, sort_keys=True))
        try:
            base = config_module.load(str(self.config_path), environ)
        except config_module.ConfigError as e:
            raise DeployError(str(e)) from None
        if base.production:
            raise DeployError("deploy up is the one-machine harness: unset NOVALAB_PRODUCTION (a site runs its "
                              "daemons with production: true, README \"Run it for real\")")
        own = {
            "key_prefix": f"novalab-deploy-{self._tag}:",
            "libvirt_uri": "test:///default",  # each compute gets its own node (start_daemon's env)
            "instances_path": str(self.dir / "instances"),
            "net_state_dir": str(self.dir / "networks"),
            "network_manager": "flat",
            "netns": None,
            "bind_floating": False,
            "time_scale": 1.0,
            "time_origin": None,
            "metrics_port": None,
            "objectstore_root": str(self.dir / "buckets"),
            "s3_url": None,
        }
        if api_port is not None:
            own["api_port"] = api_port
        if s3_port is not None:
            own["objectstore_port"] = s3_port
        try:
            return config_module.DaemonConfig.model_validate({**base.model_dump(), **own})
        except Exception as e:  # pydantic's ValidationError: a bad --port
            raise DeployError(f"bad setting: {e}") from None

    def _check_services(self, config) -> None:
        from real.startup import StartupError, connect

        for what, host, port, flag in (("EC2 API", config.api_listen, config.api_port, "--api-port"),
                                       ("object store", config.objectstore_listen, config.objectstore_port,
                                        "--s3-port")):
            if not port_free(host, port):
                raise DeployError(f"port {port} on {host} for the {what} is in use: choose another with {flag} "
                                  f"(or take down the deployment using it)")
        try:
            store, runtime = connect(config)
        except StartupError as e:
            raise DeployError(f"{e} ({SETUP['services']} starts Redis and RabbitMQ)") from None
        runtime.close()
        store.close()

    def _start_slapd(self, config):
        from real.slapd import PrivateSlapd, SlapdError

        try:
            slapd = PrivateSlapd(self.dir / "ldap", root=config.ldap_root).start()
        except SlapdError as e:
            raise DeployError(f"cannot start slapd: {e}", 1) from None
        self._record("slapd", slapd.process.pid)
        return slapd

    def _finish_config(self, config, slapd, state, vcpus, memory_mb):
        amqp_url = config.amqp_url
        vhost = f"novalab-deploy-{self._tag}"
        try:
            private = make_vhost(amqp_url, vhost)
        except VhostError as e:
            raise DeployError(f"cannot isolate the deployment's queues: {e}") from None
        if private is not None:
            amqp_url, state["vhost_node"] = private
            state["vhost"] = vhost
            self._save_state(state)
        config = config.model_copy(update={
            "amqp_url": amqp_url, "ldap_url": slapd.url, "ldap_bind_dn": slapd.bind_dn,
            "ldap_password": slapd.password, "ldap_root": slapd.root,
            # The simple scheduler's capacities: what each compute host offers.
            "max_cores": vcpus, "max_memory_mb": memory_mb,
        })
        access, secret = deploy_images.service_account(config)
        config = config.model_copy(update={"s3_url": self.s3_url(config), "s3_access_key": access,
                                           "s3_secret_key": secret})
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the password
        with os.fdopen(fd, "w") as f:
            f.write("# Written by `novalab deploy up`; every process of the deployment reads it.\n")
            f.write(yaml.safe_dump(config.model_dump(), sort_keys=True))
        os.chmod(self.config_path, 0o600)
        return config

    def _start_all(self, vcpus, memory_mb, started, state) -> dict:
        """Start every process (real.deploy_roster); -> {(kind, host): Popen} of the workers."""
        workers = {}
        for process in deploy_roster.processes(self.dir, self.config_path, state, vcpus, memory_mb):
            started[process.name] = spawn(process.argv, self.logs / f"{process.name}.log", daemon_env(process.env),
                                          detach=True)
            self._record(process.name, started[process.name].pid)
            state["processes"].append(process.name)
            self._save_state(state)
            if process.worker is not None:
                workers[process.worker] = started[process.name]
        return workers

    def _wait(self, config, workers, started, timeout) -> None:
        from real.store import RedisStore

        store = RedisStore(config.redis_url, prefix=config.key_prefix, socket_timeout=config.connect_timeout)
        try:
            deadline = time.monotonic() + timeout
            wait_for_heartbeats(store, workers, timeout, self.logs)
        finally:
            store.close()
        for name, url in (("api", self.ec2_url(config)), ("objectstore", self.s3_url(config) + "/")):
            while not answers(url):
                if started[name].poll() is not None:
                    raise DeployError(f"{name} exited with status {started[name].returncode} at start-up; its "
                                      f"log:\n{log_tail(self.logs / f'{name}.log')}", 1)
                if time.monotonic() > deadline:
                    raise DeployError(f"{name} does not answer on {url} within {timeout:g} s; see "
                                      f"{self.logs / f'{name}.log'}", 1)
                time.sleep(0.1)

    # -- what it tells -----------------------------------------------------------------

    @staticmethod
    def ec2_url(config) -> str:
        from real.manage import urls_of

        return urls_of(config)[0]

    @staticmethod
    def s3_url(config) -> str:
        from real.manage import urls_of

        return urls_of(config)[1]

    def _print_endpoints(self, config) -> None:
        self.say(f"  EC2 API        {self.ec2_url(config)}")
        self.say(f"  object store   {self.s3_url(config)}")
        self.say(f"  directory      {config.ldap_url} (bind as {config.ldap_bind_dn}; password in "
                 f"{self.dir / 'ldap' / 'password'})")
        self.say(f"  configuration  {self.config_path}")
        self.say(f"  logs           {self.logs}/")

    def _print_next(self, config) -> None:
        manage = f"novalab manage --config {self.config_path}"
        self.say("Next:")
        for line in (f"{manage} user create alice",
                     f"{manage} project create demo alice",
                     f"{manage} role add alice netadmin",
                     f"{manage} role add alice netadmin --project demo",
                     f"{manage} credentials alice demo > {self.dir / 'alice.env'}",
                     f"set -a; . {self.dir / 'alice.env'}; set +a   # then boto3 or aws ec2 ...",
                     f"novalab deploy status --dir {self.dir}",
                     f"novalab deploy down --dir {self.dir}"):
            self.say(f"  {line}")

    # -- status -------------------------------------------------------------------------

    def status(self) -> int:
        state = self.state()
        if state is None:
            self.say(f"novalab deploy: nothing deployed in {self.dir}")
            return 1
        try:
            config = self._config()
        except Exception as e:  # a half-written deployment: report what we can
            config = None
            print(f"novalab deploy: cannot read {self.config_path}: {e}", file=self.err)
        beats = self._heartbeats(config, state) if config is not None else {}
        rows = [("PROCESS", "PID", "STATE", "HEARTBEAT")]
        all_up = True
        for name in state.get("processes", []):
            alive = self.running(name)
            all_up &= alive
            kind, _, host = name.partition("-")
            beat = beats.get((kind, host))
            rows.append((name, str(self.pid(name) or "-"), "running" if alive else "stopped",
                         "-" if beat is None else f"{beat:.1f} s ago"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        self.say(f"novalab deploy: {self.dir}")
        for row in rows:
            self.say("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if config is not None:
            self._print_endpoints(config)
        return 0 if all_up and state.get("processes") else 1

    def _heartbeats(self, config, state) -> dict:
        from common import keys
        from common.effects import ZScore
        from common.errors import NovaError
        from real.store import RedisStore

        out: dict = {}
        try:
            store = RedisStore(config.redis_url, prefix=config.key_prefix, socket_timeout=2.0)
        except Exception:  # status reports; it does not fail on a missing Redis
            return out
        try:
            now = time.time()
            for spec in deploy_roster.services_of(state):
                kind, host = spec.topic, spec.host
                last = store.execute(ZScore(keys.heartbeats(kind), host))
                if last is not None:
                    out[(kind, host)] = now - float(last)
        except NovaError as e:
            print(f"novalab deploy: no heartbeats: {e}", file=self.err)
        finally:
            store.close()
        return out

    # -- down ---------------------------------------------------------------------------

    def down(self, quiet: bool = False, timeout: float = STOP_TIMEOUT) -> int:
        state = self.state()
        if state is None:
            if not quiet:
                self.say(f"novalab deploy: nothing deployed in {self.dir}")
            return 0
        names = list(state.get("processes", []))
        daemons = [n for n in names if n != "slapd"]
        stopped = self._stop([n for n in daemons], timeout)
        stopped += self._stop([n for n in names if n == "slapd"], timeout)
        status = 0
        try:
            config = self._config()
        except Exception:
            config = None  # up failed before nova.yaml was complete: nothing in the services yet
        if config is not None:
            status = self._clean_services(config, state)
        if status == 0:
            for name in MADE:
                path = self.dir / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.exists() or path.is_symlink():
                    path.unlink()
        if not quiet:
            self.say(f"novalab deploy: down in {self.dir}: stopped {len(stopped)} process(es)"
                     + ("" if status == 0 else " (services not cleaned: run down again)")
                     + f"; logs kept in {self.logs}/")
        return status

    def _stop(self, names, timeout) -> list[str]:
        """Stop the named processes; -> the names of those that were running."""
        live = {}
        for name in names:
            pid = self.pid(name)
            if pid is not None and pid_alive(pid, self.marker(name)):
                live[name] = pid
                os.kill(pid, signal.SIGTERM)
        was_live = set(live)
        deadline = time.monotonic() + timeout
        while live and time.monotonic() < deadline:
            live = {n: p for n, p in live.items() if pid_alive(p, self.marker(n))}
            if live:
                time.sleep(0.05)
        for name, pid in live.items():
            print(f"novalab deploy: {name} (pid {pid}) did not stop within {timeout:g} s: killing it", file=self.err)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_deadline = time.monotonic() + 5
        while any(pid_alive(p, self.marker(n)) for n, p in live.items()) and time.monotonic() < kill_deadline:
            time.sleep(0.05)
        return [n for n in names if n in was_live]

    def _clean_services(self, config, state) -> int:
        from common.errors import NovaError
        from real import transport
        from real.store import RedisStore

        status = 0
        vhost = state.get("vhost")
        if vhost:
            if not delete_vhost(vhost, state.get("vhost_node")):
                print(f"novalab deploy: could not delete RabbitMQ vhost {vhost}", file=self.err)
                status = 2
        else:
            try:
                transport.delete_queues(config.amqp_url, deploy_roster.queue_names(state))
            except Exception as e:  # unreachable broker: say so, keep the state for another down
                print(f"novalab deploy: could not delete the queues at {config.amqp_url}: {e}", file=self.err)
                status = 2
        try:
            store = RedisStore(config.redis_url, prefix=config.key_prefix, socket_timeout=config.connect_timeout)
            try:
                store.flush()
            finally:
                store.close()
        except NovaError as e:
            print(f"novalab deploy: could not delete the store keys {config.key_prefix}*: {e}", file=self.err)
            status = 2
        return status


# ---------------------------------------------------------------------------
# Command line


def add_parser(subparsers) -> argparse.ArgumentParser:
    deploy = subparsers.add_parser("deploy", help="a local real-mode deployment: up, status, down",
                                   description=__doc__.split("\n\n")[0])
    sub = deploy.add_subparsers(dest="deploy_command", required=True)
    for name, text in (("up", "start a deployment in DIR"), ("down", "stop it and remove what it made"),
                       ("status", "list its processes")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--dir", default=DEFAULT_DIR, help=f"the deployment's directory (default {DEFAULT_DIR})")
        if name == "up":
            p.add_argument("--computes", type=int, default=2, help="compute daemons (default 2)")
            p.add_argument("--network-workers", type=int, default=1,
                           help="network daemons competing on the network topic (default 1)")
            p.add_argument("--schedulers", type=int, default=1,
                           help="scheduler daemons competing on the scheduler topic (default 1)")
            p.add_argument("--api-port", type=int, default=None, help="EC2 API port (default api_port, 8773)")
            p.add_argument("--s3-port", type=int, default=None,
                           help="object store port (default objectstore_port, 3333)")
            p.add_argument("--vcpus", type=int, default=16, help="vCPUs of each compute host (default 16)")
            p.add_argument("--memory-mb", type=int, default=32768, help="memory of each compute host (default 32768)")
            p.add_argument("--timeout", type=float, default=START_TIMEOUT,
                           help=f"seconds to wait for everything to answer (default {START_TIMEOUT:g})")
    return deploy


def run(args) -> int:
    deployment = Deployment(args.dir)
    if deployment.dir.exists() and not deployment.dir.is_dir():
        print(f"novalab deploy: {deployment.dir} is not a directory", file=sys.stderr)
        return 2
    if args.deploy_command == "up":
        if args.vcpus < 1 or args.memory_mb < 1:
            print("novalab deploy: --vcpus and --memory-mb must be positive", file=sys.stderr)
            return 2
        try:
            return deployment.up(args.computes, args.api_port, args.s3_port, args.vcpus, args.memory_mb, args.timeout,
                                 network_workers=args.network_workers, schedulers=args.schedulers)
        except DeployError as e:
            print(f"novalab deploy: {e}", file=sys.stderr)
            return e.status
    if args.deploy_command == "status":
        return deployment.status()
    return deployment.down()
