"""A private RabbitMQ node: a broker of a run's own, which it may kill and restart.

Broker faults are played on a broker nobody else uses: never the machine's shared node
(other runs and tests hold queues there). ``PrivateRabbit(directory)`` needs the
``rabbitmq-server`` package and nothing configured: ``start()``

1. writes ``DIR/rabbitmq.conf`` (one listener, ``127.0.0.1:PORT``), an empty plugin
   list (no management or Prometheus listener to clash on 15672/15692) and an empty
   ``rabbitmq-env.conf`` (so the machine's ``/etc/rabbitmq/rabbitmq-env.conf``, which
   names the shared node, is not read);
2. runs the server script in the foreground as a child process with its own node name
   (``novalab-<id>@localhost``), distribution port, data directory (``DIR/mnesia``),
   log directory (``DIR/log``), ``HOME`` (its Erlang cookie) and ``-noinput``; with
   ``RABBITMQ_ALLOW_INPUT`` set the script ``exec``s the Erlang VM, so the child *is*
   the broker and ``kill()`` is a real ``kill -9`` of it (the script would otherwise
   stay in between as a shell that forwards signals);
3. waits, bounded, until the AMQP port answers a handshake (a node boots in a few
   seconds; the listener opens last).

``url`` is its AMQP URL (user ``guest`` from loopback, vhost ``/``: the node is private,
so the run needs no vhost of its own). ``kill()`` is SIGKILL of the VM: nothing is
flushed beyond what RabbitMQ already wrote (persistent messages of durable queues are on
disk once confirmed). ``restart()`` starts it again on the same ports and data: durable
queues come back with their persistent messages, as the machine's broker would after a
crash. ``stop()`` ends it (SIGTERM, then SIGKILL after a bound) and removes its data,
keeping ``DIR/log`` and ``DIR/server.log``.

*Not supported*: a node of another host, TLS, clustering. The node registers with the
machine's ``epmd`` (port 4369), as every Erlang node does; if none runs, the VM starts
one, which outlives the node as it would for any RabbitMQ start.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from real.slapd import free_port
from real.transport.wire import BROKER_ERRORS, close_quietly, open_connection

#: The server script itself (Debian's /usr/sbin/rabbitmq-server is a wrapper that
#: switches to the rabbitmq user, which cannot write a run's directory).
SERVER_SCRIPTS = ("/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/local/lib/rabbitmq/bin/rabbitmq-server")
#: Names another server script (a tarball install).
SERVER_VARIABLE = "NOVALAB_RABBITMQ_SERVER"
#: Bound on a start: a node boots in 2-10 s (slower on a loaded machine).
START_TIMEOUT = 90.0
#: Bound on a graceful stop before SIGKILL.
STOP_TIMEOUT = 30.0
#: Bound on each probe connection while waiting for the node.
PROBE_TIMEOUT = 2.0


class RabbitError(RuntimeError):
    """The private node could not be started; the message says why."""


def server_script() -> str | None:
    """The rabbitmq-server script to run, or None when RabbitMQ is not installed."""
    for candidate in (os.environ.get(SERVER_VARIABLE), *SERVER_SCRIPTS, shutil.which("rabbitmq-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class PrivateRabbit:
    """One RabbitMQ node of our own below ``directory``, listening on 127.0.0.1:``port``."""

    def __init__(self, directory, port: int | None = None, start_timeout: float = START_TIMEOUT):
        self.directory = Path(directory).resolve()
        self.port = port or free_port()
        self.dist_port = free_port()
        self.node = f"novalab-{secrets.token_hex(4)}@localhost"
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def environment(self) -> dict[str, str]:
        """The variables that make the server script run this node and no other."""
        d = self.directory
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))},
            "HOME": str(d),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "pid"),
            "RABBITMQ_ALLOW_INPUT": "1",
            # Distribution on loopback only, as the machine's node has it.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _configure(self) -> None:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        (d / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (d / "enabled_plugins").write_text("[].\n")
        (d / "rabbitmq-env.conf").write_text("")

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> PrivateRabbit:
        """Run the node and wait until it answers AMQP; idempotent."""
        if self.running:
            return self
        script = server_script()
        if script is None:
            raise RabbitError("rabbitmq-server is not installed (run real/setup/services.sh: Debian package "
                              f"rabbitmq-server), or set {SERVER_VARIABLE} to its server script")
        self._configure()
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115 - closed in the finally below
        try:
            self.process = subprocess.Popen([script, "-noinput"], env=self.environment(), cwd=self.directory,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        finally:
            log.close()
        self.starts += 1
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        problem = "no answer yet"
        assert self.process is not None, "start() ran Popen"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RabbitError(f"RabbitMQ node {self.node} exited with status {self.process.returncode} on "
                                  f"start: {self._log_tail()}")
            try:
                close_quietly(open_connection(self.url, PROBE_TIMEOUT, heartbeat=0, io_timeout=PROBE_TIMEOUT))
                return
            except BROKER_ERRORS as e:
                problem = repr(e)
            time.sleep(0.2)
        raise RabbitError(f"RabbitMQ node {self.node} on port {self.port} did not answer within "
                          f"{self.start_timeout:g} s: {problem}; {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return (self.directory / "server.log").read_text(errors="replace").strip()[-1500:]
        except OSError:
            return ""

    def kill(self) -> None:
        """``kill -9`` of the node (a broker crash); ``restart()`` brings it back."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)

    def restart(self) -> PrivateRabbit:
        """Start the node again on the same ports and data, and wait until it answers."""
        self.kill()
        self.process = None
        return self.start()

    def stop(self) -> None:
        """End the node (SIGTERM, then SIGKILL after ``STOP_TIMEOUT`` s) and remove its
        data; its logs stay."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(self.directory / "mnesia", ignore_errors=True)

    def __enter__(self) -> PrivateRabbit:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PrivateRabbit({str(self.directory)!r}, node={self.node!r}, port={self.port}, running={self.running})"
