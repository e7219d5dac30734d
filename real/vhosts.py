"""Private RabbitMQ virtual hosts on the local broker, made and deleted with rabbitmqctl.

rabbitmqctl talks to a node by Erlang node name, not by the AMQP URL: without ``-n`` it
reaches the machine's default node, which need not be the broker ``amqp_url`` names (a
second node on another port, a private broker of a test). So a vhost is made on the node
given (``node``, or ``NOVALAB_RABBITMQ_NODE``), else the default one, and then checked
through ``amqp_url`` itself: when that broker does not have it, the vhost is deleted
again and VhostError says which node was asked and how to name the right one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from urllib.parse import quote, urlsplit, urlunsplit

from real.transport.wire import BROKER_ERRORS, close_quietly, open_connection, redact

#: Names the Erlang node of the broker ``amqp_url`` points at, when it is not the default.
NODE_VARIABLE = "NOVALAB_RABBITMQ_NODE"
#: Bound on each rabbitmqctl command: it starts an Erlang VM (a few seconds when loaded).
RABBITMQCTL_TIMEOUT = 60
#: Bound on the check connection to the new vhost (a local broker answers in milliseconds).
CHECK_TIMEOUT = 5.0

#: vhost -> node it was made on, so delete_vhost in the same process finds it.
_NODES: dict[str, str | None] = {}


class VhostError(Exception):
    """The vhost could not be made on the broker the URL names."""


def rabbitmqctl() -> str | None:
    return shutil.which("rabbitmqctl", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin")


def _ctl(tool: str, node: str | None, *argv: str) -> bool:
    command = [tool, "-q", *(("-n", node) if node else ()), *argv]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=RABBITMQCTL_TIMEOUT).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _reachable(url: str) -> bool:
    try:
        conn = open_connection(url, CHECK_TIMEOUT, heartbeat=0, io_timeout=CHECK_TIMEOUT)
    except BROKER_ERRORS:
        return False
    close_quietly(conn)
    return True


def make_vhost(amqp_url: str, name: str, node: str | None = None) -> tuple[str, str | None] | None:
    """Make vhost ``name`` (its user may use it) on the broker ``amqp_url`` names;
    -> (the URL of it, the node it is on), or None when the broker is not local,
    rabbitmqctl is missing or refuses (then the caller keeps the shared vhost).
    Raises VhostError when rabbitmqctl made it on a node that is not that broker."""
    parts = urlsplit(amqp_url)
    tool = rabbitmqctl()
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or tool is None:
        return None
    node = node or os.environ.get(NODE_VARIABLE) or None
    if not (_ctl(tool, node, "add_vhost", name)
            and _ctl(tool, node, "set_permissions", "-p", name, parts.username or "guest", ".*", ".*", ".*")):
        _ctl(tool, node, "delete_vhost", name)
        return None
    url = urlunsplit((parts.scheme, parts.netloc, "/" + quote(name, safe=""), parts.query, parts.fragment))
    if not _reachable(url):
        _ctl(tool, node, "delete_vhost", name)
        asked = f"node {node}" if node else "rabbitmqctl's default node"
        raise VhostError(
            f"made RabbitMQ vhost {name!r} on {asked}, but the broker at {redact(amqp_url)} does not have it: "
            f"that is another node. Set {NODE_VARIABLE} to the node name of the broker at that URL "
            "(rabbitmq-diagnostics status shows it), or give amqp_url a vhost made beforehand.")
    _NODES[name] = node
    return url, node


def private_vhost(amqp_url: str, name: str, node: str | None = None) -> str | None:
    """make_vhost's URL, or None; the node is remembered for delete_vhost."""
    made = make_vhost(amqp_url, name, node)
    return made[0] if made else None


def delete_vhost(name: str, node: str | None = None) -> bool:
    """Delete vhost ``name`` on ``node`` (default: the node this process made it on)."""
    tool = rabbitmqctl()
    if tool is None:
        return False
    return _ctl(tool, node or _NODES.pop(name, None) or os.environ.get(NODE_VARIABLE) or None, "delete_vhost", name)
