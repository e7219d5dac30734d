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
