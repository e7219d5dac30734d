"""Shared fixtures: the live services real-mode and contract tests talk to.

On a developer's machine a missing service skips the test with the reason; in CI
(environment variable CI set) it fails it, because CI must run every real-mode test.
Addresses can be overridden with NOVALAB_TEST_REDIS, NOVALAB_TEST_AMQP.
"""

import os
import socket
from urllib.parse import urlparse

import pytest

IN_CI = bool(os.environ.get("CI"))


def service_unavailable(what: str, reason: str):
    """Skip (developer machine) or fail (CI) a test whose service is missing."""
    message = f"{what} is not available: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI must run real-mode tests; the test command should have started it)")
    pytest.skip(message)


def _reachable(url: str, default_port: int) -> str | None:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=2):
            return None
    except OSError as e:
        return str(e)


@pytest.fixture(scope="session")
def redis_url():
    url = os.environ.get("NOVALAB_TEST_REDIS", "redis://127.0.0.1:6379/0")
    problem = _reachable(url, 6379)
    if problem:
        service_unavailable(f"Redis at {url}", problem)
    return url


@pytest.fixture(scope="session")
def amqp_url():
    url = os.environ.get("NOVALAB_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
    problem = _reachable(url, 5672)
    if problem:
        service_unavailable(f"RabbitMQ at {url}", problem)
    return url


# ---------------------------------------------------------------------------
# A whole deployment (``novalab deploy up``), shared by the modules that drive one


def deploy_env(**extra):
    """An environment with no NOVALAB_* of the caller's (connections time out in 2 s), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVALAB_")}
    env["NOVALAB_CONNECT_TIMEOUT"] = "2"
    env.update(extra)
    return env


def free_ports():
    """Two distinct free ports: (EC2 API, object store)."""
    from real.slapd import free_port

    api = free_port()
    s3 = free_port()
    while s3 == api:
        s3 = free_port()
    return api, s3


@pytest.fixture(scope="module")
def cloud(redis_url, amqp_url, tmp_path_factory):
    """``deploy up`` with one compute host, once per test module (``deploy down`` after
    it); ``.config`` is its configuration."""
    yield from deployed(redis_url, amqp_url, tmp_path_factory, computes=1)


def deployed(redis_url, amqp_url, tmp_path_factory, environ=None, **options):
    """A module fixture's body: ``deploy up`` with ``options`` (and NOVALAB_* ``environ``),
    yielding the Deployment with ``.config``; ``deploy down`` after it."""
    try:
        import boto3  # noqa: F401
        import libvirt  # noqa: F401
    except ImportError as e:
        service_unavailable("the deploy test's Python packages", str(e))
    from real.deploy import Deployment
    from real.slapd import SlapdMissing, _find

    try:
        _find("slapd")
    except SlapdMissing as e:
        service_unavailable("slapd", str(e))
    api, s3 = free_ports()
    deployment = Deployment(tmp_path_factory.mktemp("deploy") / "cloud")
    status = deployment.up(api_port=api, s3_port=s3, **options,
                           environ=deploy_env(NOVALAB_REDIS_URL=redis_url, NOVALAB_AMQP_URL=amqp_url, **(environ or {})))
    assert status == 0
    deployment.config = deployment._config()
    yield deployment
    deployment.down()


def cloud_users(cloud):
    """alice (project demo), bob (project other), root (admin) in ``cloud``'s directory:
    -> name: (access key, secret), made once per deployment."""
    from real import manage

    if getattr(cloud, "users", None):
        return cloud.users
    settings = manage.LdapSettings(url=cloud.config.ldap_url, bind_dn=cloud.config.ldap_bind_dn,
                                   password=cloud.config.ldap_password, root=cloud.config.ldap_root)
    users = {}
    with manage.Session.connect(settings) as session:
        for name, admin in (("alice", False), ("bob", False), ("root", True)):
            user = manage.user_create(session, name, admin=admin)
            users[name] = (user.access_key, user.secret_key)
        manage.project_create(session, "demo", "alice")
        manage.project_create(session, "other", "bob")
    cloud.users = users
    return users


# ---------------------------------------------------------------------------
# The object store in a process of its own, to measure its memory


def _wait_listening(port, process, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the object store exited: {process.stderr.read().decode()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the object store did not start listening")


def peak_rss(pid) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``novalab objectstore`` in a process of its own, keys from a file (access key
    ``alice``, secret ``alice-secret``, project ``p1``): (url, pid)."""
    import subprocess
    import sys

    from real.slapd import free_port

    base = tmp_path_factory.mktemp("served")
    (base / "keys.yaml").write_text("alice: {secret: alice-secret, project: p1}\n")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from real.cli import main; main()", "objectstore", "--root", str(base / "root"),
         "--keys", str(base / "keys.yaml"), "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, process)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(30)
