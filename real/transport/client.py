"""The RPC client: casts with publisher confirms, calls with replies by correlation id."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import amqp
import kombu

from common import rpc
from common.errors import NovaError, PoisonMessage, RemoteError, RpcTimeout, Unroutable
from real.transport.wire import (
    BACKOFF_MIN,
    BROKER_ERRORS,
    CONFIRM_TIMEOUT,
    CONFIRM_WINDOW,
    CONNECT_TIMEOUT,
    CONTENT_TYPE,
    DIRECT_REPLY_TO,
    EXCHANGE,
    PERSISTENT,
    RETURNED_MAX,
    TRANSIENT,
    check_name,
    close_quietly,
    exchange,
    explain,
    open_connection,
    readable,
    redact,
    send_publish,
)

log = logging.getLogger(__name__)


class RpcClient:
    """Publishes casts and calls to the ``nova`` exchange. NOT thread-safe: one per thread.

    ``late_replies`` counts replies dropped because their call had already given up.
    Connection failures: a broken connection is noticed before publishing and replaced
    (one new connection attempt, then one more after 0.1 s); when the broker cannot be
    reached, ``Unroutable`` names the broker. A connection lost *after* the message was
    written is not retried (it may have been delivered): a cast raises ``Unroutable``
    and a call ``RpcTimeout``, both saying the callee may or may not have run.

    ``durable``: declare the exchange durable and publish casts persistent (the
    deployment's ``durable_delivery``; see "Durable delivery" in the package docstring).
    """

    def __init__(self, url: str, connect_timeout: float = CONNECT_TIMEOUT, reply_queue: str = "direct",
                 confirm_timeout: float = CONFIRM_TIMEOUT, window: int = CONFIRM_WINDOW, durable: bool = False):
        if reply_queue not in ("direct", "exclusive"):
            raise ValueError(f"reply_queue must be 'direct' or 'exclusive', got {reply_queue!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        self.window = window
        self.durable = durable
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
                conn = open_connection(self.url, self.connect_timeout, heartbeat=0, io_timeout=self.confirm_timeout)
                channel = conn.channel()
                channel.auto_decode = False
                exchange(self.durable)(channel).declare()
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
                close_quietly(conn, graceful=False)
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
        raise Unroutable(f"cannot reach the broker at {redact(self.url)}: {explain(errors[-1], self.durable)}")

    def _drop(self, error) -> None:
        if self._conn is not None and error is not None:
            log.info("RpcClient: dropping broker connection: %r", error)
        if self._async:
            topics = sorted({topic for topic, _ in self._async.values()})
            self._fail_async(f"{len(self._async)} unconfirmed when the connection was lost (to {', '.join(topics)});"
                             " they may or may not be delivered")
            self._async.clear()
        conn, self._conn, self._raw, self._channel, self._sock = self._conn, None, None, None, None
        close_quietly(conn, graceful=error is None)

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
            if readable(self._sock):
                while readable(self._sock):
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
        check_name("topic", topic)
        payload = body.encode("utf-8")
        mode = PERSISTENT if rpc.persistent(self.durable, call=msg_id is not None) else TRANSIENT
        for attempt in range(2):
            channel = self._ensure()
            seq = self._seq + 1
            props = {
                "content_type": CONTENT_TYPE,
                "content_encoding": "utf-8",
                "delivery_mode": mode,
                "message_id": str(seq),
            }
            if msg_id is not None:
                props["correlation_id"] = msg_id
                props["reply_to"] = self._reply_to
            try:
                send_publish(channel, amqp.Message(payload, **props), EXCHANGE, topic, mandatory=True)
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
        if len(self._async_failures) < RETURNED_MAX:
            self._async_failures.append(what)
        elif len(self._async_failures) == RETURNED_MAX:
            self._async_failures.append("(further failures not recorded)")

    def _on_return(self, exc, exchange, routing_key, message) -> None:
        if len(self._returned) >= RETURNED_MAX:
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
