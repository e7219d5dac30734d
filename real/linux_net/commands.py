"""The commands of the network driver: ``ip``, ``iptables`` and signals, run in its
namespace (if any), logged in ``commands``, each failure a NetworkDriverError."""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
from typing import Any

from common.errors import NetworkDriverError

_TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
# What iptables -D says (exit status 1) when the rule, or its chain, is not there.
_RULE_ABSENT = ("does a matching rule exist", "No chain/target/match by that name", "does not exist")


class Commands:
    """Runs the driver's commands; not locked (the driver holds its lock around calls)."""

    def __init__(self, namespace=None, timeout=30.0):
        self.namespace = namespace or None
        self.timeout = timeout
        self.commands: list[list[str]] = []
        self._tools: dict[str, str] = {}

    def tool(self, name) -> str:
        path = self._tools.get(name)
        if path is None:
            path = shutil.which(name, path=_TOOL_PATH)
            if path is None:
                raise NetworkDriverError(f"`{name}` is not installed (real/setup/linux_net.sh installs it)")
            self._tools[name] = path
        return path

    def wrap(self, argv):
        if self.namespace:
            return [self.tool("ip"), "netns", "exec", self.namespace, *argv]
        return list(argv)

    def run(self, argv, *, namespaced=True, check=True) -> subprocess.CompletedProcess:
        full = self.wrap(argv) if namespaced else list(argv)
        self.commands.append(full)
        env = dict(os.environ, LC_ALL="C")
        try:
            result = subprocess.run(full, capture_output=True, text=True, timeout=self.timeout, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise NetworkDriverError(f"`{shlex.join(full)}` timed out after {self.timeout:g} s") from None
        except OSError as e:
            raise NetworkDriverError(f"`{shlex.join(full)}` could not run: {e}") from None
        if check and result.returncode != 0:
            raise self.error(result)
        return result

    @staticmethod
    def error(result) -> NetworkDriverError:
        stderr = (result.stderr or "").strip() or "(no stderr)"
        return NetworkDriverError(f"`{shlex.join(result.args)}` failed with exit status {result.returncode}: {stderr}")

    def ip(self, *args, check=True):
        return self.run([self.tool("ip"), *args], check=check)

    def link(self, name, must_exist=False) -> Any:
        result = self.ip("-j", "-d", "link", "show", "dev", name, check=False)
        if result.returncode != 0:
            if not must_exist and "does not exist" in result.stderr:
                return None
            raise self.error(result)
        return json.loads(result.stdout)[0]

    def addresses(self, name) -> set[str]:
        result = self.ip("-j", "addr", "show", "dev", name)
        found = set()
        for link in json.loads(result.stdout):
            for a in link.get("addr_info", ()):
                if a.get("family") in ("inet", "inet6"):
                    found.add(str(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")))
        return found

    def iptables(self, *args, check=True):
        return self.run([self.tool("iptables"), "-w", "10", *args], check=check)

    def remove(self, table, chain, *rule) -> int:
        """Delete the rule until iptables says it is absent; returns how many went."""
        removed = 0
        for _ in range(100):
            result = self.iptables("-t", table, "-D", chain, *rule, check=False)
            if result.returncode == 0:
                removed += 1
                continue
            if result.returncode == 1 and any(s in result.stderr for s in _RULE_ABSENT):
                return removed
            raise self.error(result)
        raise NetworkDriverError(f"iptables -t {table} -D {chain} {shlex.join(rule)}: still present after 100 deletions")

    def confirm(self, table, chain, *rule):
        """2010's confirmed rule: delete (all copies), then insert at the top."""
        self.remove(table, chain, *rule)
        self.iptables("-t", table, "-I", chain, *rule)

    def signal(self, pid, sig):
        self.commands.append(["kill", f"-{signal.Signals(sig).name[3:]}", str(pid)])
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except OSError as e:
            raise NetworkDriverError(f"`kill -{signal.Signals(sig).name[3:]} {pid}` failed: {e}") from None
