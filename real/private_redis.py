"""A Redis of the run's own: ``redis-server`` on a free port of 127.0.0.1, in a directory
the run owns, for the faults that must never touch a shared Redis.

``PrivateRedis(directory)`` needs the ``redis-server`` program (Debian's redis-server
package; ``real/setup/services.sh`` installs it) and nothing else. ``start()`` runs
``redis-server --port P --bind 127.0.0.1 --save '' --appendonly no --dir DIR`` in the
foreground as a child process (log in ``DIR/redis.log``; DEBUG commands allowed from
127.0.0.1, so a test can stall it with ``DEBUG SLEEP``) and waits, bounded, until it
answers PING. Nothing is persisted while it runs: a restart without ``outage`` data is
an empty Redis, as a Redis without persistence comes back.

The store faults it plays:

- ``wipe()``: FLUSHALL, every key gone at once (the fault plan's ``store_wipe``);
- ``go_away()`` / ``come_back()``: the fault plan's ``store_outage``. The server shuts
  down saving its data to ``DIR/dump.rdb``, so connections are refused and no command
  sent meanwhile ever runs; ``come_back()`` starts it again on the same port from that
  file, with its data. (A paused process, SIGSTOP, would accept connections and run
  every queued command when resumed, after its clients gave up: that is a stall with
  ambiguous outcomes, another fault.)
- ``pause()`` / ``resume()``: SIGSTOP / SIGCONT, for that stall.

``url`` is what ``real.store.RedisStore`` and the daemons' ``redis_url`` take. ``stop()``
ends the server without saving and waits for it (bounded, then kills it). A context
manager: ``with PrivateRedis(tmp) as redis: ...``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: Seconds to wait for a started server's first PONG (a cold start takes milliseconds).
START_TIMEOUT = 10.0
#: Seconds to wait for the server to exit after SHUTDOWN or SIGTERM, before SIGKILL.
STOP_TIMEOUT = 10.0
#: Free ports tried when another process takes the one picked before redis-server binds it.
PORT_ATTEMPTS = 5


class PrivateRedisError(RuntimeError):
    """The private Redis cannot be started (no redis-server, or it would not answer)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(self, directory, port: int | None = None, executable: str = "redis-server"):
        self.directory = Path(directory)
        self.port = port
        self.executable = executable
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> PrivateRedis:
        """Run redis-server and wait until it answers (a free port unless one was given;
        another is tried if the port is taken meanwhile); idempotent."""
        if self.running:
            return self
        program = shutil.which(self.executable)
        if program is None:
            raise PrivateRedisError(f"{self.executable} not found on PATH (Debian: apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        fixed = self.port is not None
        for _ in range(1 if fixed else PORT_ATTEMPTS):
            if not fixed:
                self.port = free_port()
            self._spawn(program)
            try:
                self._wait_ready()
                return self
            except PrivateRedisError:
                self.stop()
                if fixed or "Address already in use" not in self._log_tail():
                    raise
        raise PrivateRedisError(f"redis-server found no free port in {PORT_ATTEMPTS} attempts: {self._log_tail()}")

    def _spawn(self, program: str) -> None:
        argv = [program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.directory.resolve()), "--dbfilename", "dump.rdb", "--daemonize", "no",
                "--enable-debug-command", "local"]
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def _client(self, timeout: float = 2.0) -> redis.Redis:
        if self.port is None:
            raise PrivateRedisError("the private Redis was never started")
        # Never resent: a SHUTDOWN retried after its connection closed would stop the next server.
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout,
                           retry=Retry(NoBackoff(), 0))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        assert self.process is not None, "_spawn ran Popen"
        problem = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrivateRedisError(f"redis-server exited with status {self.process.returncode} on start: "
                                        f"{self._log_tail()}")
            client = self._client()
            try:
                if client.ping():
                    return
            except redis.RedisError as e:
                problem = str(e)
            finally:
                client.close()
            time.sleep(0.05)
        raise PrivateRedisError(f"redis-server on port {self.port} did not answer within {START_TIMEOUT:g} s: {problem}")

    def _log_tail(self) -> str:
        try:
            return (self.directory / "redis.log").read_text(errors="replace").strip()[-1500:]
        except OSError:
            return ""

    def stop(self) -> None:
        """End the server without saving and wait (bounded; killed after STOP_TIMEOUT)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
        (self.directory / "dump.rdb").unlink(missing_ok=True)

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PrivateRedis({str(self.directory)!r}, port={self.port}, running={self.running})"

    # -- faults ---------------------------------------------------------------------

    def wipe(self) -> int:
        """FLUSHALL: every key of every database gone. -> how many keys there were."""
        client = self._client()
        try:
            lost = int(client.dbsize())
            client.flushall()
            return lost
        finally:
            client.close()

    def go_away(self) -> None:
        """Shut down saving the data (``DIR/dump.rdb``): unreachable until ``come_back``."""
        client = self._client()
        try:
            client.shutdown(save=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits: that is the answer
        finally:
            client.close()
        process, self.process = self.process, None
        if process is not None:
            process.wait(timeout=STOP_TIMEOUT)

    def come_back(self) -> None:
        """Start again on the same port, loading what ``go_away`` saved."""
        program = shutil.which(self.executable)
        if program is None:
            raise PrivateRedisError(f"{self.executable} disappeared from PATH")
        self._spawn(program)
        self._wait_ready()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted, nothing is answered until ``resume``."""
        if self.running:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: the server runs every command queued meanwhile."""
        if self.running:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGCONT)
