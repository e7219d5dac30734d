"""Reaching the services a real-mode process needs (Redis, RabbitMQ) before it starts.

Shared by the daemons, the DHCP hook, the EC2 API and the operator tools, so that each
refuses to start with the same message naming the missing service and its address.
"""

from __future__ import annotations

from common.errors import NovaError
from real import transport
from real.config import DaemonConfig
from real.runner import RealRuntime
from real.store import RedisStore
from real.transport import RpcClient


class StartupError(RuntimeError):
    """A process cannot start; the message says which service is missing and where."""


def rpc_client(config: DaemonConfig) -> RpcClient:
    """An RpcClient for this deployment's broker, with its durable delivery setting."""
    return RpcClient(config.amqp_url, durable=config.durable_delivery)


def connect(config: DaemonConfig):
    """-> (store, runtime) once Redis and RabbitMQ answer; StartupError otherwise."""
    store = RedisStore(config.redis_url, prefix=config.key_prefix, socket_timeout=config.connect_timeout)
    try:
        store.ping()
    except NovaError as e:
        raise StartupError(f"cannot reach Redis at {config.redis_url}: {e}") from None
    try:
        # One real connection (RpcClient connects lazily, on its first publish).
        transport.queue_stats(config.amqp_url, (), connect_timeout=config.connect_timeout)
    except Exception as e:  # any failure to connect is a refusal to start
        raise StartupError(f"cannot reach RabbitMQ at {config.amqp_url}: {e}") from None
    runtime = RealRuntime(store, lambda: rpc_client(config), time_scale=config.time_scale,
                          time_origin=config.time_origin)
    return store, runtime
