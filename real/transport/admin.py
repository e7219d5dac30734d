"""Admin helpers: queue statistics by passive declare, deleting queues, and publishing
raw bytes (fault injection: a body no RpcClient would send)."""

from __future__ import annotations

from collections.abc import Iterable

import amqp

from real.transport.wire import (
    ADMIN_TIMEOUT,
    CONNECT_TIMEOUT,
    EXCHANGE,
    TRANSIENT,
    close_quietly,
    open_connection,
    send_publish,
)


def queue_stats(url: str, names: Iterable[str], connect_timeout: float = CONNECT_TIMEOUT) -> dict:
    """``{name: {"messages": ready, "consumers": n}}`` by passive declare; ``None`` for
    a queue that does not exist. ``messages`` counts ready messages, not unacked ones."""
    out: dict[str, dict | None] = {}
    conn = open_connection(url, connect_timeout, heartbeat=0, io_timeout=ADMIN_TIMEOUT)
    try:
        channel = None
        for name in names:
            if channel is None:
                channel = conn.channel()
            try:
                _, messages, consumers = channel.queue_declare(queue=name, passive=True)
                out[name] = {"messages": messages, "consumers": consumers}
            except amqp.exceptions.NotFound:
                out[name] = None
                channel = None  # the broker closed the channel with 404
    finally:
        close_quietly(conn)
    return out


def queue_depths(url: str, names: Iterable[str], connect_timeout: float = CONNECT_TIMEOUT) -> dict:
    """``{name: ready messages}`` (``None`` for a missing queue), for the run report."""
    return {name: (s["messages"] if s is not None else None)
            for name, s in queue_stats(url, names, connect_timeout).items()}


def delete_queues(url: str, names: Iterable[str], connect_timeout: float = CONNECT_TIMEOUT) -> None:
    """Delete queues if they exist (with their messages and bindings)."""
    conn = open_connection(url, connect_timeout, heartbeat=0, io_timeout=ADMIN_TIMEOUT)
    try:
        channel = conn.channel()
        for name in names:
            channel.queue_delete(queue=name)
    finally:
        close_quietly(conn)


def publish_raw(url: str, routing_key: str, body: bytes, connect_timeout: float = CONNECT_TIMEOUT) -> None:
    """Publish ``body`` as it is onto the ``nova`` exchange (no envelope, no size check,
    no confirm): how the fault plan puts a poison message on a topic."""
    conn = open_connection(url, connect_timeout, heartbeat=0, io_timeout=ADMIN_TIMEOUT)
    try:
        message = amqp.Message(bytes(body), content_type="application/json", delivery_mode=TRANSIENT)
        send_publish(conn.channel(), message, EXCHANGE, routing_key, mandatory=False)
    finally:
        close_quietly(conn)
