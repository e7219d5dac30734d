"""DHCP of the network driver: one dnsmasq per bridge, its hosts file, pid file and leases."""

from __future__ import annotations

import ipaddress
import os
import shlex
import signal
import stat
import time

from common.effects import DhcpHost
from common.errors import NetworkDriverError
from real.linux_net.arguments import check_address, check_int
from real.linux_net.commands import Commands

_STOP_WAIT = 5.0  # seconds to wait for dnsmasq after SIGTERM (and again after SIGKILL)
_START_WAIT = 5.0  # seconds to wait for a started dnsmasq's pid file


class Dnsmasq:
    """The dnsmasq processes of the bridges of one ``state_dir``; the driver's lock,
    shared, guards every public method."""

    def __init__(self, run: Commands, state_dir, dhcp_script, lock):
        self._run = run
        self.state_dir = state_dir
        self.dhcp_script = dhcp_script
        self._lock = lock

    def hosts_file(self, bridge) -> str:
        return os.path.join(self.state_dir, f"nova-{bridge}.conf")

    def pid_file(self, bridge) -> str:
        return os.path.join(self.state_dir, f"nova-{bridge}.pid")

    def leases_file(self, bridge) -> str:
        return os.path.join(self.state_dir, f"nova-{bridge}.leases")

    def update(self, bridge, gateway, dhcp_start, hosts, lease_seconds=120) -> int:
        """Write ``bridge``'s hosts file (``mac,hostname.novalocal,ip`` per host: DhcpHost
        objects or ``(mac, hostname, address)`` tuples) and make its dnsmasq serve it:
        SIGHUP the live dnsmasq named by the pid file when its command line contains
        our hosts file and is the one we would start now, otherwise stop it (if any)
        and start a new one. Returns the dnsmasq pid.

        Failure: NetworkDriverError, with nothing written, when an argument is malformed,
        when ``state_dir`` is not readable by dnsmasq's unprivileged user, or when
        ``bridge`` does not exist or lacks the ``gateway`` address; and when dnsmasq
        refuses to start (its stderr is in the message) or wrote no pid file within 5 s. The hosts file has been
        rewritten by then; call again once the cause is fixed.
        """
        gateway = str(check_address(gateway, "gateway"))
        dhcp_start = str(check_address(dhcp_start, "dhcp_start"))
        lease_seconds = check_int(lease_seconds, "lease_seconds", 1, 2**31 - 1)
        lines = "".join(_host_line(h) + "\n" for h in hosts)
        with self._lock:
            self._prepare_state_dir()
            on_bridge = {str(ipaddress.ip_interface(a).ip) for a in self._run.addresses(bridge)}
            if gateway not in on_bridge:
                raise NetworkDriverError(
                    f"gateway {gateway} is not an address of {bridge} (it has {sorted(on_bridge) or 'none'}): "
                    "dnsmasq would serve nobody; ensure_bridge with the gateway address first"
                )
            conf = self.hosts_file(bridge)
            tmp = f"{conf}.tmp"
            with open(tmp, "w") as f:
                f.write(lines)
            os.chmod(tmp, 0o644)
            os.replace(tmp, conf)
            argv = self._dnsmasq_argv(bridge, gateway, dhcp_start, lease_seconds)
            pid = self._dnsmasq_pid(bridge)
            if pid is not None:
                if _cmdline(pid)[1:] == argv[1:]:
                    self._run.signal(pid, signal.SIGHUP)
                    return pid
                self._stop(bridge)
            return self._start_dnsmasq(bridge, argv)

    def stop(self, bridge) -> bool:
        """Stop ``bridge``'s dnsmasq: SIGTERM every live dnsmasq whose command line
        names this bridge's hosts file (the pid file's and any stray one), wait up to
        5 s, SIGKILL what is left and wait again; remove the pid file. Returns whether
        one was running. The hosts and leases files stay (2010 left them too).

        Failure: NetworkDriverError when a process survives SIGKILL or cannot be
        signalled.
        """
        with self._lock:
            return self._stop(bridge)

    def pid(self, bridge) -> int | None:
        """The pid of ``bridge``'s live dnsmasq per its pid file, or None."""
        with self._lock:
            return self._dnsmasq_pid(bridge)

    def _dnsmasq_argv(self, bridge, gateway, dhcp_start, lease_seconds):
        argv = [
            self._run.tool("dnsmasq"),
            "--strict-order",
            "--bind-interfaces",
            "--conf-file=",
            f"--pid-file={self.pid_file(bridge)}",
            f"--listen-address={gateway}",
            "--except-interface=lo",
            f"--dhcp-range={dhcp_start},static,{lease_seconds}s",
            f"--dhcp-hostsfile={self.hosts_file(bridge)}",
        ]
        if self.dhcp_script:
            argv += ["--leasefile-ro", f"--dhcp-script={self.dhcp_script}"]
        else:
            argv += [f"--dhcp-leasefile={self.leases_file(bridge)}"]
        return [*argv, "--port=0"]

    def _prepare_state_dir(self):
        os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
        path = self.state_dir
        while True:
            mode = os.stat(path).st_mode
            if not mode & stat.S_IXOTH:
                raise NetworkDriverError(
                    f"dnsmasq rereads its hosts file as an unprivileged user, but {path} is mode "
                    f"{stat.S_IMODE(mode):04o} (not searchable by others); chmod o+x it or choose "
                    f"another state_dir than {self.state_dir}"
                )
            parent = os.path.dirname(path)
            if parent == path:
                return
            path = parent

    def _start_dnsmasq(self, bridge, argv) -> int:
        pid_file = self.pid_file(bridge)
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass
        self._run.run(argv)  # dnsmasq checks its options, daemonizes, writes the pid file
        deadline = time.monotonic() + _START_WAIT
        while True:
            pid = self._dnsmasq_pid(bridge)
            if pid is not None:
                return pid
            if time.monotonic() > deadline:
                raise NetworkDriverError(
                    f"`{shlex.join(self._run.wrap(argv))}` exited 0 but no live dnsmasq is named by {pid_file} after {_START_WAIT:g} s"
                )
            time.sleep(0.02)

    def _dnsmasq_pid(self, bridge) -> int | None:
        try:
            with open(self.pid_file(bridge)) as f:
                pid = int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self._is_ours(pid, bridge) else None

    def _is_ours(self, pid, bridge) -> bool:
        cmd = _cmdline(pid)
        if not cmd or os.path.basename(cmd[0]) != "dnsmasq" or not alive(pid):
            return False
        return f"--dhcp-hostsfile={self.hosts_file(bridge)}" in cmd

    def _ours(self, bridge) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and self._is_ours(int(entry), bridge):
                pids.append(int(entry))
        return sorted(pids)

    def _stop(self, bridge) -> bool:
        pids = self._ours(bridge)
        for pid in pids:
            self._run.signal(pid, signal.SIGTERM)
        left = wait_gone(pids, _STOP_WAIT)
        for pid in left:
            self._run.signal(pid, signal.SIGKILL)
        left = wait_gone(left, _STOP_WAIT)
        if left:
            raise NetworkDriverError(f"dnsmasq of {bridge} (pids {left}) survived SIGTERM and SIGKILL")
        try:
            os.unlink(self.pid_file(bridge))
        except FileNotFoundError:
            pass
        return bool(pids)


def _host_line(host) -> str:
    if isinstance(host, DhcpHost) or hasattr(host, "mac"):  # DhcpHost or look-alike
        mac, hostname, address = host.mac, host.hostname, host.address
    else:
        mac, hostname, address = host
    mac, hostname = str(mac).lower(), str(hostname)
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise NetworkDriverError(f"DHCP host {hostname!r}: {mac!r} is not a MAC address")
    if not hostname or any(c in hostname for c in ", \t\r\n#"):
        raise NetworkDriverError(f"DHCP host {mac}: {hostname!r} is not a usable host name")
    if not hostname.endswith(".novalocal"):
        hostname += ".novalocal"
    return f"{mac},{hostname},{check_address(address, 'DHCP host address')}"


def _cmdline(pid) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] if raw else []


def alive(pid) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(pids, seconds) -> list[int]:
    deadline = time.monotonic() + seconds
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if alive(p)]
    return left
