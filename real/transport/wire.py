"""What client, server and admin helpers share: names, limits, opening and closing
connections, and the bare ``basic.publish``."""

from __future__ import annotations

import select

import amqp
import kombu

from common import rpc

EXCHANGE = rpc.EXCHANGE
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
CONTENT_TYPE = "application/json"
TRANSIENT = 1  # AMQP delivery modes: not persisted, and persisted with the queue
PERSISTENT = 2  # (see "Durable delivery" in the package docstring)

# -- limits (every wait and every retry is bounded; why, next to each) -------------

#: TCP connect plus AMQP handshake. A local broker answers in milliseconds; five
#: seconds covers a loaded one without letting a dead address hang a caller.
CONNECT_TIMEOUT = 5.0
#: Longest wait for a publisher confirm. RabbitMQ confirms a transient message in well
#: under a millisecond; a missing confirm means a blocked (memory alarm) or dying
#: broker, and a cast must fail rather than hang.
CONFIRM_TIMEOUT = 10.0
#: Server heartbeat: a dead peer (broker host gone, half-open TCP) is noticed within
#: about two intervals, instead of never. Clients do not use heartbeats: nothing would
#: drive them while the client is idle; they check the socket before each publish.
HEARTBEAT = 10
#: Reconnect backoff of a server worker (common.rpc says why these values; the sim's
#: model of a reconnecting service uses the same ones).
BACKOFF_MIN = rpc.RECONNECT_BACKOFF_MIN
BACKOFF_MAX = rpc.RECONNECT_BACKOFF_MAX
#: A connection must have lived this long before the backoff starts again from the
#: minimum, so a broker that accepts and then drops at once is not hammered.
BACKOFF_RESET_AFTER = 5.0
#: How long an idle worker blocks in the socket before it checks for stop() and
#: heartbeats: the latency of stop() on an idle server, and << HEARTBEAT / 2.
POLL_INTERVAL = 0.5
#: Longest wait for the broker's close-ok when closing a connection on purpose.
CLOSE_TIMEOUT = 2.0
#: Bound on one socket write, or on the rest of a frame once its first byte arrived,
#: on a server connection: past it the broker is stuck and the connection is replaced.
#: Three heartbeat intervals, so a broker that is merely slow is not abandoned.
IO_TIMEOUT = 30.0
#: Bound on each answer to an admin helper (passive declare, delete).
ADMIN_TIMEOUT = 10.0
#: Default limits of stop() and start().
STOP_TIMEOUT = 10.0
START_TIMEOUT = 10.0
#: Most casts with wait=False that may be unconfirmed at once: bounds the client's
#: memory and what a lost connection can leave in doubt; large enough that the
#: confirm round trip no longer limits the publish rate.
CONFIRM_WINDOW = 1000
#: AMQP shortstr limit: a correlation id longer than this cannot be put on a reply.
SHORTSTR_MAX = 255
#: Bound on remembered basic.return message ids (each is consumed by the publish that
#: waits for it; this only guards against a leak if one is never looked at).
RETURNED_MAX = 1024

#: Everything that means "the connection or channel is gone or unusable". socket.timeout
#: (TimeoutError) is an OSError too: every loop catches it *before* this tuple.
BROKER_ERRORS: tuple[type[BaseException], ...] = (amqp.exceptions.AMQPError, OSError, EOFError)


def check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} must be a non-empty string, got {name!r}")
    if "*" in name or "#" in name:
        raise ValueError(f"{kind} {name!r} contains '*' or '#': bindings use exact routing keys only")


def exchange(durable: bool = False) -> kombu.Exchange:
    """The ``nova`` exchange as every client and server of a deployment declares it
    (declaring it with another ``durable`` is a channel error, PRECONDITION_FAILED:
    see ``explain``)."""
    return kombu.Exchange(EXCHANGE, type="topic", durable=durable, auto_delete=False)


def topic_queue(name: str, durable: bool = False) -> kombu.Queue:
    """The 2010 topic queue: named after its routing key, bound to ``nova`` with it.
    ``topic_queue(name)(channel).declare()`` declares exchange, queue and binding. A
    durable queue (on a durable exchange) outlives a broker restart with its persistent
    messages; a transient one is gone, messages and all."""
    check_name("queue", name)
    return kombu.Queue(name, exchange=exchange(durable), routing_key=name, durable=durable, auto_delete=False)


def explain(error: BaseException, durable: bool) -> str:
    """``repr(error)``, plus what to do when it is the broker refusing a declaration
    because the exchange or a queue already exists with the other durability."""
    text = repr(error)
    if isinstance(error, amqp.exceptions.PreconditionFailed) and "durable" in str(error):
        text += (f" (this process declares durable={durable}: every process of a deployment needs the same "
                 "durable_delivery setting; a vhost that held the other kind needs its exchange and queues deleted)")
    return text


def redact(url: str) -> str:
    """The URL without its password, for error messages."""
    try:
        return kombu.Connection(url).as_uri(include_password=False)
    except Exception:  # a malformed URL: say nothing about it rather than leak it
        return "<broker url>"


def open_connection(url: str, connect_timeout: float, heartbeat: int, io_timeout: float) -> kombu.Connection:
    """One connection attempt (no kombu-internal retries or sleeps). Every later
    socket read and write on it is bounded by ``io_timeout`` (py-amqp leaves the socket
    blocking after the handshake: a stuck broker would hang a declare forever)."""
    conn = kombu.Connection(url, connect_timeout=connect_timeout, heartbeat=heartbeat)
    try:
        conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        conn.connection.sock.settimeout(io_timeout)
    except BaseException:
        close_quietly(conn, graceful=False)
        raise
    return conn


def close_quietly(conn, graceful: bool = True) -> None:
    """Close a connection without raising. Graceful: connection.close and wait for
    close-ok, at most CLOSE_TIMEOUT (a hung broker must not hang stop()). Otherwise
    just drop the socket (a broken connection has nobody to say goodbye to)."""
    if conn is None:
        return
    try:
        if graceful and conn.connected:
            conn.connection.sock.settimeout(CLOSE_TIMEOUT)
            conn.release()
            return
    except Exception:
        pass
    try:
        conn.collect()
    except Exception:
        pass


def send_publish(channel, message, exchange: str, routing_key: str, mandatory: bool) -> None:
    """``basic.publish`` without py-amqp's per-publish extras: ``Channel.basic_publish``
    first polls the socket for a ``connection.blocked`` notice (a non-blocking read and two
    timeout syscalls per message, a third of the cost of a cast). We poll with one
    select() before publishing instead (RpcClient._ensure) and workers read between
    messages anyway; a blocked broker surfaces as a confirm or write timeout."""
    channel.send_method(_BASIC_PUBLISH, "Bssbb", (0, exchange, routing_key, mandatory, False), message)


_BASIC_PUBLISH = amqp.spec.Basic.Publish


def readable(sock) -> bool:
    try:
        r, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed socket (fileno -1)
        return True
    return bool(r)
