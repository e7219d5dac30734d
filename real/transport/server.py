"""The RPC server: worker threads consuming a topic and its host queue, acking by policy
and reconnecting with backoff."""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import amqp
import kombu

from common import rpc
from common.errors import NovaError, PoisonMessage
from real.transport.wire import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    BACKOFF_RESET_AFTER,
    BROKER_ERRORS,
    CONNECT_TIMEOUT,
    CONTENT_TYPE,
    HEARTBEAT,
    IO_TIMEOUT,
    POLL_INTERVAL,
    SHORTSTR_MAX,
    START_TIMEOUT,
    STOP_TIMEOUT,
    TRANSIENT,
    check_name,
    close_quietly,
    explain,
    open_connection,
    redact,
    send_publish,
    topic_queue,
)

log = logging.getLogger(__name__)

#: Worker threads an RpcServer replaces after they died of something unexpected (not a
#: broker error, which the worker survives by reconnecting). A few deaths are a bug met
#: once; more mean the process cannot keep its consumers, and it should say so by
#: failing (the daemon stops heartbeating and exits) rather than limp on.
MAX_WORKER_RESTARTS = 10


class RpcServer:
    """Serves ``topic`` and ``topic.<host>`` with ``workers`` threads.

    ``handle(message) -> result`` gets the decoded envelope (a dict), runs in a worker
    thread, raises PoisonMessage for what it cannot dispatch and NovaError subclasses
    for failures. Counters (read them any time): ``served`` (deliveries processed),
    ``poison``, ``errors`` (unexpected exceptions), ``reconnects``, ``restarts`` (worker
    threads replaced after dying). Past MAX_WORKER_RESTARTS the server gives up: ``failed``
    is set and ``on_failed(reason)`` called once. ``durable``: declare the exchange and
    both queues durable (the deployment's ``durable_delivery``).
    """

    def __init__(self, url: str, topic: str, host: str, handle: Callable[[dict], Any], workers: int = 4,
                 prefetch: int = 1, connect_timeout: float = CONNECT_TIMEOUT, heartbeat: int = HEARTBEAT,
                 on_failed: Callable[[str], Any] | None = None, max_restarts: int = MAX_WORKER_RESTARTS,
                 durable: bool = False):
        check_name("topic", topic)
        check_name("host", host)
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive int, got {workers!r}")
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be a positive int, got {prefetch!r}")
        self.url = url
        self.durable = durable
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
        self.restarts = 0
        self.max_restarts = max_restarts
        self.on_failed = on_failed
        self.failed = threading.Event()
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
            errors = [explain(w.last_error, self.durable) for w in self.workers if w.last_error is not None]
            self.stop()
            raise ConnectionError(
                f"RpcServer {self.topic}/{self.host}: workers not consuming after {timeout:g} s at"
                f" {redact(self.url)}: {errors[-1] if errors else 'no error reported'}"
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

    def _worker_died(self, worker: _Worker, error: BaseException) -> None:
        """Replace a worker thread that died of ``error`` (its connection is closed, so
        the broker requeues what it held unacked), or give up past ``max_restarts``."""
        if self._stopping.is_set():
            return
        with self._counter_lock:
            self.restarts += 1
            give_up = self.restarts > self.max_restarts
            if not give_up:
                replacement = _Worker(self, worker.index)
                self.workers[worker.index] = replacement
        if give_up:
            reason = (f"RpcServer {self.topic}/{self.host}: {self.restarts} worker threads died, the last of "
                      f"{error!r}; giving up")
            log.error("%s", reason)
            if not self.failed.is_set():
                self.failed.set()
                if self.on_failed is not None:
                    self.on_failed(reason)
            return
        log.error("RPC worker %s died of %r; replaced (%d of %d restarts)", worker.name, error, self.restarts,
                  self.max_restarts)
        replacement.start()

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
                except BaseException as e:
                    self.consuming = False
                    log.exception("RPC worker %s died", self.name)
                    self._discard()
                    server._worker_died(self, e)
                    return
            self._shutdown()

    def _connect(self) -> None:
        server = self.server
        conn = open_connection(server.url, server.connect_timeout, heartbeat=server.heartbeat, io_timeout=IO_TIMEOUT)
        self.connection, self.raw = conn, conn.connection
        channel = conn.channel()
        channel.auto_decode = False  # bodies stay bytes: decode() checks UTF-8 itself
        self.channel = channel
        # global=True: the prefetch is shared by both consumers of this channel, so a
        # worker holds at most `prefetch` unacked deliveries, not `prefetch` per queue.
        channel.basic_qos(prefetch_size=0, prefetch_count=server.prefetch, a_global=True)
        for name in server.queues:
            topic_queue(name, server.durable)(channel).declare()
        self.consumer_tags = [
            channel.basic_consume(queue=name, no_ack=False, callback=self._inbox.append)
            for name in server.queues
        ]
        self.consuming = True

    def _serve(self) -> None:
        stopping = self.server._stopping
        raw, conn, inbox = self.raw, self.connection, self._inbox
        assert conn is not None, "_serve runs after open_connection"
        sock = raw.sock
        # Wait for input with select() and read with the socket's own timeout (set by
        # open_connection), instead of passing a timeout to py-amqp, which sets and restores it
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
        except Exception as e:  # any failure to decode is poison, never a dead worker
            envelope = None
            failure = e if isinstance(e, PoisonMessage) else PoisonMessage(f"{type(e).__name__}: {e}")
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
        if not isinstance(msg_id, str) or len(msg_id.encode("utf-8")) > SHORTSTR_MAX:
            log.warning("RPC reply dropped: unusable _msg_id %.80r", msg_id)
            return
        try:
            body = rpc.encode(rpc.reply(result, failure))
        except PoisonMessage as e:  # the result is not JSON: the caller gets that error
            body = rpc.encode(rpc.reply(failure=e))
        # Not mandatory, not confirmed: a caller that is gone has nobody to tell, and
        # the broker drops a reply to a dead direct reply-to address silently.
        send_publish(
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
        close_quietly(conn, graceful)

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
