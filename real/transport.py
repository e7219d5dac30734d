"""RPC over RabbitMQ with kombu: the 2010 Nova topology, with timeouts and confirms.

Every service consumes two queues on the topic exchange ``nova``: the shared topic
``T`` (all servers of the kind compete for it) and its own ``T.<host>``. Each queue is
bound with exactly its own name as routing key. Bodies are the envelope of
:mod:`common.rpc` (JSON text); replies are ``{"result": ..., "failure": ...}``. The
server behaves like ``sim/services.py``: decode, ack by the method's policy, handle,
reply; poison messages are acked once, logged once and answered, never requeued.

Features
========

* Exchange ``nova`` (type ``topic``), one queue per topic and per ``topic.<host>``,
  exact bindings, competing consumers on the shared topic. Names containing ``*`` or
  ``#`` are refused (they would become wildcard bindings).
* ``RpcClient.cast``: published *mandatory* on a channel in publisher-confirm mode and
  returns once the broker confirmed it; raises ``Unroutable`` when no queue is bound
  (``basic.return`` arrives before the confirm) or the broker refused it (``basic.nack``).
  ``cast(..., wait=False)`` batches confirms (at most ``window`` in flight);
  ``flush()`` waits for them and raises ``Unroutable`` naming the casts that failed.
* ``RpcClient.call``: the same publish plus ``_msg_id``; the reply comes back through
  RabbitMQ's direct reply-to (``amq.rabbitmq.reply-to``, default) or a per-client
  exclusive queue (``reply_queue="exclusive"``), matched by correlation id. Raises
  ``RemoteError(exc_type, value)`` when the callee failed, ``RpcTimeout`` after
  ``timeout`` seconds (2010 waited forever), ``Unroutable`` when nothing is bound. A
  reply that comes after its call gave up is dropped and counted in ``late_replies``.
* ``RpcServer``: ``workers`` threads, each with its own connection and channel (kombu
  and py-amqp objects are not thread-safe), each consuming ``T`` and ``T.<host>`` with
  manual acks and a channel-wide ``basic.qos`` prefetch. ``handle(message)`` runs in the
  worker thread, so concurrency is bounded by ``workers``.
* Ack policy from :func:`common.rpc.ack_policy`: ``ON_RECEIPT`` acks before ``handle``,
  ``ON_COMPLETION`` after it (a crash mid-method redelivers with ``redelivered=True``).
* Reconnect: a worker that loses its connection (broker restart, socket error, missed
  heartbeats) reconnects with exponential backoff 0.1 s .. 5 s and re-declares the
  exchange, queues, bindings, qos and consumers. AMQP heartbeats (10 s) on server
  connections, kept up by a helper thread while a handler runs long.
* ``queue_stats`` / ``queue_depths``: ready-message and consumer counts by passive
  declare, for the run report. ``delete_queues`` for tests and tear-down.

Design choices
==============

* **Not durable.** Exchange and queues are declared ``durable=False, auto_delete=False``
  and messages are transient (delivery mode 1), as in 2010 (REDIS/AUSTIN ``TopicConsumer``
  had ``durable = False``). A broker restart loses queued messages; servers re-declare
  on reconnect, and what the loss leaves behind is caught by the build timeout (I4) and
  the callers' timeouts instead of being replayed hours later (a stale ``run_instance``
  replayed after a restart could boot an instance nobody waits for). Durable queues with
  persistent messages would make every confirm wait for a disk write.
* **A confirm per cast by default; batching only on request.** ``cast`` must say
  *synchronously* whether the message was routed (the ``Cast`` effect raises
  ``Unroutable``), which needs the broker's answer for that very message: one confirm
  round trip per cast (bench/rpc.py: ~0.7-0.85x raw kombu publish+consume on 2 cores).
  Bulk senders that can take the error later use ``wait=False`` + ``flush()`` (~1x raw).
  The client tracks confirms itself (``basic.ack``/``basic.nack`` events, ``message_id``
  on the message to match a ``basic.return``) rather than py-amqp's
  ``basic_publish_confirm``, so a call does not wait for its confirm before waiting for
  its reply, and publishes with ``send_method`` (see :func:`_send_publish`).
* **Direct reply-to instead of a queue per call.** 2010 declared a direct exchange and
  an auto-delete queue named after every ``msg_id`` (three round trips and two broker
  objects per call). Direct reply-to needs no declaration at all, cannot be deleted or
  expire under a living caller (oslo.messaging's reply queues can: A8), and a reply to
  a caller that is gone is dropped by the broker. ``reply_queue="exclusive"`` (one
  server-named exclusive queue per client connection) is kept for comparison: the bench
  measured no speed difference beyond noise (0.92-1.09x), so robustness decided.

Not supported
=============

* Thread-safety of ``RpcClient``: one client per thread (checked: another thread gets
  ``RuntimeError``). ``RpcServer`` methods may be called from any one thread.
* Durable queues and persistent messages, dead-letter exchanges (poison messages are
  acked and dropped after a WARNING and an error reply), queue TTLs and expiry: a queue
  of a host that is gone for good stays and keeps what is sent to it.
* Fanout (2010 had none), wildcard bindings, several exchanges.
* Redelivery dedup: a redelivered ``ON_COMPLETION`` message is handled again; handlers
  are idempotent (reliability A2/A3), the transport keeps no msg-id cache.
* Flow control beyond timeouts: when the broker blocks publishers (memory alarm) a cast
  fails after the confirm timeout (10 s) instead of waiting.
* The broker's consumer delivery-ack timeout (30 min default) for ``ON_COMPLETION``
  handlers that run longer than that.
* With ``ON_RECEIPT`` the prefetch slot is free while the handler runs, so each worker
  may hold one more delivery (unacked, requeued if it dies) than it is handling.
* TLS and connection URLs with several hosts (kombu would accept them; untested).

Connection string
=================

``amqp://guest:guest@127.0.0.1:5672//`` (kombu/py-amqp URL: user, password, host, port,
virtual host after the third slash; ``//`` is the default vhost ``/``).
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import amqp
import kombu

from common import rpc
from common.errors import NovaError, PoisonMessage, RemoteError, RpcTimeout, Unroutable

__all__ = [
    "DIRECT_REPLY_TO",
    "EXCHANGE",
    "RpcClient",
    "RpcServer",
    "delete_queues",
    "exchange",
    "queue_depths",
    "queue_stats",
    "topic_queue",
]

log = logging.getLogger(__name__)

EXCHANGE = rpc.EXCHANGE
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
CONTENT_TYPE = "application/json"
TRANSIENT = 1  # AMQP delivery mode: not persisted (see "Not durable" above)

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
#: Reconnect backoff of a server worker: fast enough that a brief drop costs ~0.1 s,
#: capped so a long outage costs one connection attempt per worker every 5 s. A server
#: never stops retrying (a service must come back after an outage of any length, as
#: 2010's fetch loop did); the cap bounds the rate of attempts and of log lines.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
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
_SHORTSTR_MAX = 255
#: Bound on remembered basic.return message ids (each is consumed by the publish that
#: waits for it; this only guards against a leak if one is never looked at).
_RETURNED_MAX = 1024

#: Everything that means "the connection or channel is gone or unusable". socket.timeout
#: (TimeoutError) is an OSError too: every loop catches it *before* this tuple.
BROKER_ERRORS: tuple[type[BaseException], ...] = (amqp.exceptions.AMQPError, OSError, EOFError)


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} must be a non-empty string, got {name!r}")
    if "*" in name or "#" in name:
        raise ValueError(f"{kind} {name!r} contains '*' or '#': bindings use exact routing keys only")


def exchange() -> kombu.Exchange:
    """The ``nova`` exchange as every client and server declares it (declaring it
    with other arguments is a channel error, PRECONDITION_FAILED)."""
    return kombu.Exchange(EXCHANGE, type="topic", durable=False, auto_delete=False)


def topic_queue(name: str) -> kombu.Queue:
    """The 2010 topic queue: named after its routing key, bound to ``nova`` with it.
    ``topic_queue(name)(channel).declare()`` declares exchange, queue and binding."""
    _check_name("queue", name)
    return kombu.Queue(name, exchange=exchange(), routing_key=name, durable=False, auto_delete=False)


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    try:
        return kombu.Connection(url).as_uri(include_password=False)
    except Exception:  # a malformed URL: say nothing about it rather than leak it
        return "<broker url>"


def _open(url: str, connect_timeout: float, heartbeat: int, io_timeout: float) -> kombu.Connection:
    """One connection attempt (no kombu-internal retries or sleeps). Every later
    socket read and write on it is bounded by ``io_timeout`` (py-amqp leaves the socket
    blocking after the handshake: a stuck broker would hang a declare forever)."""
    conn = kombu.Connection(url, connect_timeout=connect_timeout, heartbeat=heartbeat)
    try:
        conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        conn.connection.sock.settimeout(io_timeout)
    except BaseException:
        _close_quietly(conn, graceful=False)
        raise
    return conn


def _close_quietly(conn, graceful: bool = True) -> None:
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


def _send_publish(channel, message, exchange: str, routing_key: str, mandatory: bool) -> None:
    """``basic.publish`` without py-amqp's per-publish extras: ``Channel.basic_publish``
    first polls the socket for a ``connection.blocked`` notice (a non-blocking read and two
    timeout syscalls per message, a third of the cost of a cast). We poll with one
    select() before publishing instead (RpcClient._ensure) and workers read between
    messages anyway; a blocked broker surfaces as a confirm or write timeout."""
    channel.send_method(_BASIC_PUBLISH, "Bssbb", (0, exchange, routing_key, mandatory, False), message)


_BASIC_PUBLISH = amqp.spec.Basic.Publish


def _readable(sock) -> bool:
    try:
        r, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed socket (fileno -1)
        return True
    return bool(r)


# ==================================================================================
# client
# ==================================================================================


class RpcClient:
    """Publishes casts and calls to the ``nova`` exchange. NOT thread-safe: one per thread.

    ``late_replies`` counts replies dropped because their call had already given up.
    Connection failures: a broken connection is noticed before publishing and replaced
    (one new connection attempt, then one more after 0.1 s); when the broker cannot be
    reached, ``Unroutable`` names the broker. A connection lost *after* the message was
    written is not retried (it may have been delivered): a cast raises ``Unroutable``
    and a call ``RpcTimeout``, both saying the callee may or may not have run.
    """

    def __init__(self, url: str, connect_timeout: float = CONNECT_TIMEOUT, reply_queue: str = "direct",
                 confirm_timeout: float = CONFIRM_TIMEOUT, window: int = CONFIRM_WINDOW):
        if reply_queue not in ("direct", "exclusive"):
            raise ValueError(f"reply_queue must be 'direct' or 'exclusive', got {reply_queue!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        self.window = window
        self.url = url
        self.connect_timeout = connect_timeout
        self.reply_queue = reply_queue
        self.confirm_timeout = confirm_timeout
        self.late_replies = 0
        self.reconnects = 0
        self._owner: int | None = None
        self._conn: kombu.Connection | None = None
        self._raw: Any = None  # the py-amqp Connection under self._conn
        self._channel: Any = None
        self._sock: Any = None
        self._sock_timeout = confirm_timeout
        self._reply_to: str | None = None
        self._seq = 0  # publish sequence number on the current channel (confirm tags)
        self._unconfirmed: set[int] = set()
        self._nacked: set[int] = set()
        self._returned: set[str] = set()  # message ids of basic.return'ed publishes
        self._async: dict[int, tuple[str, str]] = {}  # wait=False casts not yet confirmed
        self._async_failures: list[str] = []  # what flush() will report
        self._waiting: str | None = None  # msg_id of the call in progress
        self._reply = None

    # -- public -------------------------------------------------------------------

    def cast(self, topic: str, method: str, args: dict, context=None, wait: bool = True) -> None:
        """Publish ``method(**args)`` to ``topic``; return once the broker confirmed it.

        Raises Unroutable when no queue is bound to ``topic``, the broker refused the
        message, or the broker could not be reached / was lost before confirming.
        Raises PoisonMessage (before publishing) when ``args`` cannot travel as JSON.

        ``wait=False`` batches confirms: return as soon as the message is written; at
        most ``window`` such casts are unconfirmed at a time (a full window waits for
        confirms). :meth:`flush` waits for all of them and raises Unroutable naming the
        ones that were not routed, refused or lost with the connection."""
        self._check_thread()
        body = rpc.encode(rpc.envelope(method, args, context))
        seq = self._publish(topic, body, method, None)
        if not wait:
            self._async[seq] = (topic, method)
            if len(self._async) >= self.window:
                self._settle(self.window // 2)
            return
        deadline = time.monotonic() + self.confirm_timeout
        unconfirmed = self._unconfirmed
        try:
            while seq in unconfirmed:
                if not self._read(deadline):
                    self._drop(TimeoutError("no publisher confirm"))
                    raise Unroutable(
                        f"the broker did not confirm cast {method} to {topic!r} within {self.confirm_timeout:g} s"
                        " (blocked or failing broker); it may or may not be delivered"
                    )
        except BROKER_ERRORS as e:
            self._drop(e)
            raise Unroutable(
                f"connection to the broker lost before it confirmed cast {method} to {topic!r} ({e});"
                " it may or may not be delivered"
            ) from None
        self._check_routed(seq, topic, method, "cast")

    def call(self, topic: str, method: str, args: dict, context=None, timeout: float = 30.0):
        """Publish ``method(**args)`` to ``topic`` and wait at most ``timeout`` s for the reply.

        Returns the callee's result. Raises RemoteError(exc_type, value) when the callee
        failed, RpcTimeout when no reply came in time (the callee may or may not have
        run), Unroutable when no queue is bound or the broker cannot be reached."""
        self._check_thread()
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        deadline = time.monotonic() + timeout
        msg_id = uuid.uuid4().hex
        body = rpc.encode(rpc.envelope(method, args, context, msg_id=msg_id))
        seq = self._publish(topic, body, method, msg_id)
        self._waiting = msg_id
        self._reply = None
        try:
            while self._reply is None:
                self._check_routed(seq, topic, method, "call")
                if not self._read(deadline):
                    raise RpcTimeout(
                        f"no reply from {topic!r} to {method} within {timeout:g} s (msg_id {msg_id});"
                        " the callee may or may not have run"
                    )
        except BROKER_ERRORS as e:
            self._drop(e)
            raise RpcTimeout(
                f"connection to the broker lost while waiting for the reply from {topic!r} to {method}"
                f" ({e}); the callee may or may not have run"
            ) from None
        finally:
            self._waiting = None
            self._reset_timeout()
        body, self._reply = self._reply, None
        return _parse_reply(body, topic, method)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every ``cast(wait=False)`` is confirmed (at most ``timeout``,
        default the confirm timeout). Raises Unroutable listing the casts that were not
        routed, were refused, or were unconfirmed when the connection was lost (those
        may or may not have been delivered)."""
        self._check_thread()
        try:
            self._settle(0, timeout)
        except Unroutable:
            pass  # _settle dropped the connection, which recorded the casts left in doubt
        if self._async_failures:
            failures, self._async_failures = self._async_failures, []
            shown = "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
            raise Unroutable(f"batched casts failed: {shown}")

    def close(self) -> None:
        """Close the connection (idempotent). A later cast or call reconnects. Casts
        sent with ``wait=False`` and not flushed are settled first (at most the confirm
        timeout); failures among them are logged, not raised."""
        if self._async and self._conn is not None:
            try:
                self._settle(0)
            except NovaError:
                pass
        if self._async_failures:
            log.warning("RpcClient closed with %d unreported batched cast failure(s): %s",
                        len(self._async_failures), "; ".join(self._async_failures[:5]))
            self._async_failures = []
        self._drop(None)

    def _settle(self, upto: int, timeout: float | None = None) -> None:
        """Read confirms until at most ``upto`` batched casts are unconfirmed."""
        deadline = time.monotonic() + (self.confirm_timeout if timeout is None else timeout)
        try:
            while len(self._async) > upto:
                if not self._read(deadline):
                    n = len(self._async)
                    self._drop(TimeoutError("no publisher confirm"))
                    raise Unroutable(f"the broker did not confirm {n} batched cast(s) in time (blocked or failing"
                                     " broker); they may or may not be delivered")
        except BROKER_ERRORS as e:
            self._drop(e)
            raise Unroutable(f"connection to the broker lost while confirming batched casts ({e})") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals ----------------------------------------------------------------

    def _check_thread(self) -> None:
        me = threading.get_ident()
        if self._owner is None:
            self._owner = me
        elif self._owner != me:
            raise RuntimeError("RpcClient is not thread-safe: create one per thread")

    def _connect(self) -> None:
        """A connection, a confirm-mode channel and the reply consumer. Two attempts
        ("reconnect once"), 0.1 s apart: a broker that is down is reported, not waited for."""
        errors = []
        for attempt in range(2):
            if attempt:
                time.sleep(BACKOFF_MIN)
            conn = None
            try:
                conn = _open(self.url, self.connect_timeout, heartbeat=0, io_timeout=self.confirm_timeout)
                channel = conn.channel()
                channel.auto_decode = False
                exchange()(channel).declare()
                channel.confirm_select()
                channel.events["basic_ack"].add(self._on_ack)
                channel.events["basic_nack"].add(self._on_nack)
                channel.events["basic_return"].add(self._on_return)
                if self.reply_queue == "direct":
                    reply_to = DIRECT_REPLY_TO
                else:
                    reply_to, _, _ = channel.queue_declare(queue="", exclusive=True, auto_delete=True)
                # Direct reply-to requires consuming (no-ack) before publishing with it.
                channel.basic_consume(queue=reply_to, no_ack=True, callback=self._on_reply)
            except BROKER_ERRORS as e:
                _close_quietly(conn, graceful=False)
                errors.append(e)
                continue
            self._conn, self._raw, self._channel, self._reply_to = conn, conn.connection, channel, reply_to
            self._sock = conn.connection.sock
            self._sock_timeout = self.confirm_timeout
            self._seq = 0
            self._unconfirmed.clear()
            self._nacked.clear()
            self._returned.clear()
            return
        raise Unroutable(f"cannot reach the broker at {_redact(self.url)}: {errors[-1]!r}")

    def _drop(self, error) -> None:
        if self._conn is not None and error is not None:
            log.info("RpcClient: dropping broker connection: %r", error)
        if self._async:
            topics = sorted({topic for topic, _ in self._async.values()})
            self._fail_async(f"{len(self._async)} unconfirmed when the connection was lost (to {', '.join(topics)});"
                             " they may or may not be delivered")
            self._async.clear()
        conn, self._conn, self._raw, self._channel, self._sock = self._conn, None, None, None, None
        _close_quietly(conn, graceful=error is None)

    def _ensure(self):
        """The channel to publish on: a new connection if there is none, or if the
        current one was closed by the broker while we were idle (the socket is
        readable: EOF, connection.close, connection.blocked, or a late reply)."""
        if self._conn is None:
            self._connect()
            return self._channel
        if self._async:  # confirms are on their way: read them when the window fills
            return self._channel
        try:
            if _readable(self._sock):
                while _readable(self._sock):
                    if not self._read(time.monotonic() + 1.0):
                        break
                self._reset_timeout()
        except BROKER_ERRORS as e:
            self.reconnects += 1
            self._drop(e)
            self._connect()
        return self._channel

    def _read(self, deadline: float) -> bool:
        """Read and dispatch inbound frames until one method completes or ``deadline``
        passes; False once it has passed. Sets the socket timeout itself instead of
        passing one to py-amqp, which would set and restore it (two syscalls) per read."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if remaining < self._sock_timeout:
            self._sock.settimeout(remaining)
            self._sock_timeout = remaining
        try:
            self._raw.drain_events(timeout=None)
        except TimeoutError:
            pass
        return True

    def _reset_timeout(self) -> None:
        """Back to the confirm timeout, which also bounds every socket write."""
        if self._sock is not None and self._sock_timeout != self.confirm_timeout:
            try:
                self._sock.settimeout(self.confirm_timeout)
            except OSError:
                pass
            self._sock_timeout = self.confirm_timeout

    def _publish(self, topic: str, body: str, method: str, msg_id: str | None) -> int:
        """Write one mandatory, confirm-tracked message; returns its confirm tag. A write
        that fails did not reach the broker as a whole frame: reconnect and write once more."""
        _check_name("topic", topic)
        payload = body.encode("utf-8")
        for attempt in range(2):
            channel = self._ensure()
            seq = self._seq + 1
            props = {
                "content_type": CONTENT_TYPE,
                "content_encoding": "utf-8",
                "delivery_mode": TRANSIENT,
                "message_id": str(seq),
            }
            if msg_id is not None:
                props["correlation_id"] = msg_id
                props["reply_to"] = self._reply_to
            try:
                _send_publish(channel, amqp.Message(payload, **props), EXCHANGE, topic, mandatory=True)
            except BROKER_ERRORS as e:
                self.reconnects += 1
                self._drop(e)
                if attempt:
                    raise Unroutable(f"cannot publish {method} to {topic!r}: broker connection failed twice ({e!r})") from e
                continue
            self._seq = seq
            self._unconfirmed.add(seq)
            return seq
        raise AssertionError("unreachable")

    def _check_routed(self, seq: int, topic: str, method: str, kind: str) -> None:
        if self._returned and str(seq) in self._returned:
            self._returned.discard(str(seq))
            raise Unroutable(f"no queue is bound to topic {topic!r} ({kind} {method})")
        if self._nacked and seq in self._nacked:
            self._nacked.discard(seq)
            raise Unroutable(f"the broker refused {kind} {method} to {topic!r} (basic.nack)")

    # py-amqp channel events (run inside drain_events, in the owner thread)

    def _on_ack(self, tag: int, multiple: bool) -> None:
        tags = [t for t in self._unconfirmed if t <= tag] if multiple else (tag,)
        self._unconfirmed.difference_update(tags)
        if self._async:
            for t in tags:
                sent = self._async.pop(t, None)
                if sent is not None and self._returned and str(t) in self._returned:
                    self._returned.discard(str(t))
                    self._fail_async(f"no queue is bound to topic {sent[0]!r} (cast {sent[1]})")

    def _on_nack(self, tag: int, multiple: bool) -> None:
        tags = [t for t in self._unconfirmed if t <= tag] if multiple else (tag,)
        self._unconfirmed.difference_update(tags)
        for t in tags:
            sent = self._async.pop(t, None)
            if sent is None:
                self._nacked.add(t)
            else:
                self._fail_async(f"the broker refused cast {sent[1]} to {sent[0]!r} (basic.nack)")

    def _fail_async(self, what: str) -> None:
        if len(self._async_failures) < _RETURNED_MAX:
            self._async_failures.append(what)
        elif len(self._async_failures) == _RETURNED_MAX:
            self._async_failures.append("(further failures not recorded)")

    def _on_return(self, exc, exchange, routing_key, message) -> None:
        if len(self._returned) >= _RETURNED_MAX:
            self._returned.clear()
        self._returned.add(message.properties.get("message_id"))

    def _on_reply(self, message) -> None:
        cid = message.properties.get("correlation_id")
        if cid is not None and cid == self._waiting:
            self._reply = message.body
        else:
            self.late_replies += 1
            log.debug("RpcClient: dropped a reply for %s: its call is no longer waiting", cid)


def _parse_reply(body, topic: str, method: str):
    try:
        reply = rpc.decode(body)
        failure = reply["failure"]
        result = reply["result"]
    except (PoisonMessage, KeyError) as e:
        raise RemoteError("PoisonMessage", f"malformed reply from {topic!r} to {method}: {e}") from None
    if failure is not None:
        if isinstance(failure, (list, tuple)) and len(failure) >= 2:
            raise RemoteError(str(failure[0]), str(failure[1]))
        raise RemoteError("RemoteError", str(failure))
    return result


# ==================================================================================
# server
# ==================================================================================


class RpcServer:
    """Serves ``topic`` and ``topic.<host>`` with ``workers`` threads.

    ``handle(message) -> result`` gets the decoded envelope (a dict), runs in a worker
    thread, raises PoisonMessage for what it cannot dispatch and NovaError subclasses
    for failures. Counters (read them any time): ``served`` (deliveries processed),
    ``poison``, ``errors`` (unexpected exceptions), ``reconnects``.
    """

    def __init__(self, url: str, topic: str, host: str, handle: Callable[[dict], Any], workers: int = 4,
                 prefetch: int = 1, connect_timeout: float = CONNECT_TIMEOUT, heartbeat: int = HEARTBEAT):
        _check_name("topic", topic)
        _check_name("host", host)
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive int, got {workers!r}")
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be a positive int, got {prefetch!r}")
        self.url = url
        self.topic = topic
        self.host = host
        self.queues = (topic, rpc.host_topic(topic, host))
        self.handle = handle
        self.prefetch = prefetch
        self.connect_timeout = connect_timeout
        self.heartbeat = heartbeat
        self.served = 0
        self.poison = 0
        self.errors = 0
        self.reconnects = 0
        self._counter_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake_r: int | None = None  # a pipe, made by start(); see stop()
        self._wake_w: int | None = None
        self.workers = [_Worker(self, i) for i in range(workers)]
        self._pump: threading.Thread | None = None
        self._started = False

    def __repr__(self) -> str:
        return f"<RpcServer {self.topic}/{self.host} workers={len(self.workers)} ready={self.ready}>"

    @property
    def ready(self) -> int:
        """How many workers are connected and consuming right now."""
        return sum(1 for w in self.workers if w.consuming)

    def start(self, timeout: float = START_TIMEOUT) -> RpcServer:
        """Start the workers and wait until every one consumes (queues declared and
        bound). If that takes longer than ``timeout``, stop them and raise
        ConnectionError with the last connection error."""
        if self._started:
            raise RuntimeError("RpcServer.start() called twice")
        self._started = True
        # stop() writes a byte here: idle workers wait in select() on it and their socket
        self._wake_r, self._wake_w = os.pipe()
        for w in self.workers:
            w.start()
        self._pump = threading.Thread(target=self._heartbeat_pump, name=f"rpc-{self.topic}-{self.host}-hb",
                                      daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.ready_event.wait(max(0.0, deadline - time.monotonic()))
        if self.ready < len(self.workers):
            errors = [repr(w.last_error) for w in self.workers if w.last_error is not None]
            self.stop()
            raise ConnectionError(
                f"RpcServer {self.topic}/{self.host}: workers not consuming after {timeout:g} s at"
                f" {_redact(self.url)}: {errors[-1] if errors else 'no error reported'}"
            )
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Graceful stop: let each worker finish the message it handles, cancel its
        consumers and close its connection (unhandled prefetched deliveries are
        requeued by the broker). Returns True when every thread ended in ``timeout``."""
        self._stopping.set()
        if self._wake_w is not None:
            os.write(self._wake_w, b"x")
        deadline = time.monotonic() + timeout
        for w in self.workers:
            if w.is_alive():
                w.join(max(0.0, deadline - time.monotonic()))
        if self._pump is not None and self._pump.is_alive():
            self._pump.join(max(0.0, deadline - time.monotonic()))
        clean = not any(w.is_alive() for w in self.workers)
        if clean and self._wake_r is not None and self._wake_w is not None:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = None
        if not clean:
            log.warning("RpcServer %s/%s: %d worker(s) still busy after %g s", self.topic, self.host,
                        sum(w.is_alive() for w in self.workers), timeout)
        return clean

    def __enter__(self):
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _count(self, name: str) -> None:
        with self._counter_lock:
            setattr(self, name, getattr(self, name) + 1)

    def _heartbeat_pump(self) -> None:
        """Send heartbeats for workers that are inside ``handle`` (they do not read or
        write their connection meanwhile), so a long handler does not get the
        connection closed for missed heartbeats and its message redelivered."""
        if not self.heartbeat:
            return
        interval = max(self.heartbeat / 4, 0.25)
        while not self._stopping.wait(interval):
            for w in self.workers:
                if w.busy and w.io_lock.acquire(blocking=False):
                    try:
                        raw = w.raw
                        if w.busy and raw is not None:
                            raw.send_heartbeat()
                    except BROKER_ERRORS:
                        pass  # the worker sees the broken connection itself when it returns
                    finally:
                        w.io_lock.release()


class _Worker(threading.Thread):
    """One consumer: its own connection and channel, consuming both queues."""

    def __init__(self, server: RpcServer, index: int):
        super().__init__(name=f"rpc-{server.topic}-{server.host}-{index}", daemon=True)
        self.server = server
        self.index = index
        self.connection: kombu.Connection | None = None  # tests may break it on purpose
        self.raw: Any = None
        self.channel: Any = None
        self.consumer_tags: list[str] = []
        self.io_lock = threading.Lock()  # held except while inside handle()
        self.busy = False
        self.consuming = False
        self.last_error: BaseException | None = None
        self.ready_event = threading.Event()
        self._inbox: deque = deque()

    def run(self) -> None:
        server = self.server
        stopping = server._stopping
        delay = BACKOFF_MIN
        with self.io_lock:
            while not stopping.is_set():
                connected_at = None
                try:
                    self._connect()
                    connected_at = time.monotonic()
                    self.ready_event.set()
                    self._serve()
                except BROKER_ERRORS as e:
                    self.last_error = e
                    self.consuming = False
                    self._discard()
                    if stopping.is_set():
                        break
                    if connected_at is not None and time.monotonic() - connected_at > BACKOFF_RESET_AFTER:
                        delay = BACKOFF_MIN
                    server._count("reconnects")
                    log.warning("RPC worker %s: broker connection failed (%r); reconnecting in %.1f s",
                                self.name, e, delay)
                    self.io_lock.release()
                    try:
                        stopping.wait(delay)
                    finally:
                        self.io_lock.acquire()
                    delay = min(delay * 2, BACKOFF_MAX)
                except BaseException:
                    self.consuming = False
                    log.exception("RPC worker %s died", self.name)
                    self._discard()
                    raise
            self._shutdown()

    def _connect(self) -> None:
        server = self.server
        conn = _open(server.url, server.connect_timeout, heartbeat=server.heartbeat, io_timeout=IO_TIMEOUT)
        self.connection, self.raw = conn, conn.connection
        channel = conn.channel()
        channel.auto_decode = False  # bodies stay bytes: decode() checks UTF-8 itself
        self.channel = channel
        # global=True: the prefetch is shared by both consumers of this channel, so a
        # worker holds at most `prefetch` unacked deliveries, not `prefetch` per queue.
        channel.basic_qos(prefetch_size=0, prefetch_count=server.prefetch, a_global=True)
        for name in server.queues:
            topic_queue(name)(channel).declare()
        self.consumer_tags = [
            channel.basic_consume(queue=name, no_ack=False, callback=self._inbox.append)
            for name in server.queues
        ]
        self.consuming = True

    def _serve(self) -> None:
        stopping = self.server._stopping
        raw, conn, inbox = self.raw, self.connection, self._inbox
        assert conn is not None, "_serve runs after _open"
        sock = raw.sock
        # Wait for input with select() and read with the socket's own timeout (set by
        # _open), instead of passing a timeout to py-amqp, which sets and restores it
        # (two syscalls) for each of the three frames of a delivery.
        waitfor = [sock, self.server._wake_r]
        next_heartbeat = 0.0
        while not stopping.is_set():
            # Deliveries can already be in the inbox: py-amqp dispatches them while it
            # waits for another answer (e.g. the second basic.consume-ok in _connect).
            while inbox and not stopping.is_set():
                self._process(inbox.popleft())
            r, _, _ = select.select(waitfor, [], [], POLL_INTERVAL)
            if sock in r:
                # One frame, not drain_events(): that reads on until a method frame
                # completes, so a lone heartbeat frame would block it (up to IO_TIMEOUT).
                raw.blocking_read(timeout=None)
            now = time.monotonic()
            if now >= next_heartbeat:  # py-amqp wants about one check per second
                conn.heartbeat_check()
                next_heartbeat = now + 1.0

    def _process(self, message) -> None:
        server = self.server
        tag = message.delivery_info["delivery_tag"]
        queue = message.delivery_info.get("routing_key")
        props = message.properties
        reply_to = props.get("reply_to")
        msg_id = props.get("correlation_id")
        method = "?"
        envelope = None
        result = None
        failure: BaseException | None = None
        try:
            envelope = rpc.decode(message.body)
            if isinstance(envelope.get("method"), str) and envelope["method"]:
                method = envelope["method"]
            msg_id = envelope.get("_msg_id", msg_id)
        except PoisonMessage as e:
            failure = e
        ack_first = rpc.ack_policy(method) is rpc.AckPolicy.ON_RECEIPT
        if ack_first:
            self.channel.basic_ack(tag)
        if envelope is not None:
            self.busy = True
            self.io_lock.release()
            try:
                result = server.handle(envelope)
            except NovaError as e:  # PoisonMessage included
                failure = e
            except Exception as e:
                failure = e
                server._count("errors")
                log.exception("RPC %s on %s: unexpected exception in handler", method, queue)
            finally:
                self.io_lock.acquire()
                self.busy = False
        if not ack_first:
            self.channel.basic_ack(tag)
        if isinstance(failure, PoisonMessage):
            server._count("poison")
            log.warning("RPC poison message on %s (method %s): %s; acked, not requeued", queue, method, failure)
        server._count("served")
        if reply_to and msg_id is not None:
            self._reply(reply_to, msg_id, result, failure)

    def _reply(self, reply_to: str, msg_id, result, failure) -> None:
        if not isinstance(msg_id, str) or len(msg_id.encode("utf-8")) > _SHORTSTR_MAX:
            log.warning("RPC reply dropped: unusable _msg_id %.80r", msg_id)
            return
        try:
            body = rpc.encode(rpc.reply(result, failure))
        except PoisonMessage as e:  # the result is not JSON: the caller gets that error
            body = rpc.encode(rpc.reply(failure=e))
        # Not mandatory, not confirmed: a caller that is gone has nobody to tell, and
        # the broker drops a reply to a dead direct reply-to address silently.
        _send_publish(
            self.channel,
            amqp.Message(body.encode("utf-8"), content_type=CONTENT_TYPE, content_encoding="utf-8",
                         correlation_id=msg_id, delivery_mode=TRANSIENT),
            "", reply_to, mandatory=False,
        )

    def _discard(self, graceful: bool = False) -> None:
        """Forget the connection; its unacked deliveries are the broker's again."""
        self._inbox.clear()
        self.consuming = False
        conn, self.connection, self.raw, self.channel = self.connection, None, None, None
        _close_quietly(conn, graceful)

    def _shutdown(self) -> None:
        """stop(): cancel consumers, close channel and connection."""
        self.consuming = False
        channel = self.channel
        if channel is not None:
            try:
                for tag in self.consumer_tags:
                    channel.basic_cancel(tag)
                channel.close()
            except BROKER_ERRORS as e:
                log.debug("RPC worker %s: error while closing: %r", self.name, e)
        self._discard(graceful=True)


# ==================================================================================
# admin helpers
# ==================================================================================


def queue_stats(url: str, names: Iterable[str], connect_timeout: float = CONNECT_TIMEOUT) -> dict:
    """``{name: {"messages": ready, "consumers": n}}`` by passive declare; ``None`` for
    a queue that does not exist. ``messages`` counts ready messages, not unacked ones."""
    out: dict[str, dict | None] = {}
    conn = _open(url, connect_timeout, heartbeat=0, io_timeout=ADMIN_TIMEOUT)
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
        _close_quietly(conn)
    return out


def queue_depths(url: str, names: Iterable[str], connect_timeout: float = CONNECT_TIMEOUT) -> dict:
    """``{name: ready messages}`` (``None`` for a missing queue), for the run report."""
    return {name: (s["messages"] if s is not None else None)
            for name, s in queue_stats(url, names, connect_timeout).items()}


def delete_queues(url: str, names: Iterable[str], connect_timeout: float = CONNECT_TIMEOUT) -> None:
    """Delete queues if they exist (with their messages and bindings)."""
    conn = _open(url, connect_timeout, heartbeat=0, io_timeout=ADMIN_TIMEOUT)
    try:
        channel = conn.channel()
        for name in names:
            channel.queue_delete(queue=name)
    finally:
        _close_quietly(conn)
