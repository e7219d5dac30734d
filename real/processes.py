"""Starting, watching and stopping novalab daemon processes, and probing what they serve.

Used by ``novalab deploy`` (processes that outlive it, known by pid file) and by a
real-mode run (its own children)."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
#: Seconds a process gets after SIGTERM before SIGKILL.
STOP_TIMEOUT = 15.0


class DeployError(RuntimeError):
    """Daemons cannot be brought up (``novalab deploy up``, a real-mode run); ``status`` is
    the exit status to give."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def daemon_env(extra: Mapping[str, str] | None = None) -> dict:
    """The environment of a daemon process: ours without NOVALAB_* (the configuration
    file says everything), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVALAB_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def novalab_command(*args: str) -> list[str]:
    """``novalab ARGS`` as a command line of this interpreter."""
    return [sys.executable, "-m", "real.cli", *args]


def spawn(argv, log_path: Path, env: Mapping[str, str] | None = None, detach: bool = False) -> subprocess.Popen:
    """Start ``argv`` with stdout and stderr appended to ``log_path``; ``detach``: in a
    session of its own, so it outlives us and a Ctrl-C in our terminal."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=ROOT, env=dict(env) if env is not None else daemon_env(),
                                start_new_session=detach)


def start_daemon(kind: str, host: str, config_path: Path, logs: Path, *, env: Mapping[str, str] | None = None,
                 detach: bool = False, log_name: str | None = None) -> subprocess.Popen:
    """``novalab KIND --host HOST --config CONFIG`` with its log in ``logs/KIND-HOST.log``."""
    return spawn(novalab_command(kind, "--host", host, "--config", str(config_path)),
                 logs / (log_name or f"{kind}-{host}.log"), daemon_env(env), detach)


def log_tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def wait_for_heartbeats(store, processes: Mapping[tuple[str, str], subprocess.Popen], timeout: float,
                        logs: Path | None = None) -> None:
    """Wait until every ``(kind, host)`` has a heartbeat in ``store``; raises
    DeployError(status 1) when a process exits first or ``timeout`` runs out."""
    from common import keys
    from common.effects import ZScore

    deadline = time.monotonic() + timeout
    waiting = set(processes)
    while waiting:
        for kind, host in sorted(waiting):
            if store.execute(ZScore(keys.heartbeats(kind), host)) is not None:
                waiting.discard((kind, host))
                continue
            proc = processes[(kind, host)]
            if proc.poll() is not None:
                where = f"; its log:\n{log_tail(logs / f'{kind}-{host}.log')}" if logs else ""
                raise DeployError(f"{kind} {host} exited with status {proc.returncode} at start-up{where}", 1)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise DeployError(f"no heartbeat from {', '.join(f'{k} {h}' for k, h in sorted(waiting))} "
                              f"within {timeout:g} s" + (f"; see {logs}" if logs else ""), 1)
        time.sleep(0.1)


def stop_processes(processes, timeout: float = STOP_TIMEOUT) -> list:
    """SIGTERM every Popen in ``processes``, wait until ``timeout`` for all of them,
    then SIGKILL the rest; -> the ones that had to be killed."""
    processes = list(processes)
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = []
    for proc in processes:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed.append(proc)
    return killed


def pid_alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` runs (not a zombie) with ``marker`` in its command line."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child and has exited
    except ChildProcessError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state not in ("Z", "X") and marker in cmdline


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether an HTTP server answers ``GET url`` (any status; no proxy)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host")
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", parts.path or "/")
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return True
