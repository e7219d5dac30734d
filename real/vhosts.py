"""Private RabbitMQ virtual hosts on the local broker, made and deleted with rabbitmqctl."""

from __future__ import annotations

import os
import shutil
import subprocess
from urllib.parse import quote, urlsplit, urlunsplit


def rabbitmqctl() -> str | None:
    return shutil.which("rabbitmqctl", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin")


def private_vhost(amqp_url: str, name: str) -> str | None:
    """Make vhost ``name`` on the local broker of ``amqp_url`` (its user may use it);
    -> the URL of it, or None when the broker is not local, rabbitmqctl is missing or
    refuses (then the caller keeps the shared vhost)."""
    parts = urlsplit(amqp_url)
    tool = rabbitmqctl()
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or tool is None:
        return None
    try:
        for argv in (("add_vhost", name), ("set_permissions", "-p", name, parts.username or "guest", ".*", ".*", ".*")):
            done = subprocess.run([tool, "-q", *argv], capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                delete_vhost(name)
                return None
    except (OSError, subprocess.TimeoutExpired):
        return None
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(name, safe=""), parts.query, parts.fragment))


def delete_vhost(name: str) -> bool:
    tool = rabbitmqctl()
    if tool is None:
        return False
    try:
        return subprocess.run([tool, "-q", "delete_vhost", name], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
