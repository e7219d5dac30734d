"""A SimPy model of the RabbitMQ broker as 2010 Nova used it.

Nova (Austin/Bexar) talked to RabbitMQ through one topic exchange, ``nova``. Every
service declared a queue named after its topic (``compute``) and one named after
``topic.host`` (``compute.host7``), each bound with its own name as the routing key.
Every service of a topic consumes the shared queue (competing consumers: whoever is
free takes the next message) and its own host queue.

This module models that broker in virtual time, cheaply enough for 500 hosts and
tens of thousands of messages in a few wall seconds. Its behaviour follows
RabbitMQ's ``confirms.md`` and errs on the side of being no kinder than the real
broker.

Features
========

* One topic exchange (``nova``) with **exact** routing keys: a publish reaches every
  queue bound with exactly that key. Binding twice is a no-op (2010's fakerabbit
  delivered twice; RabbitMQ does not).
* ``publish`` is *mandatory*: it returns ``False`` and counts ``unroutable`` when no
  queue is bound, so the caller can raise ``Unroutable``. It never blocks.
* Competing consumers with flow control: a consumer has a ``capacity`` (its worker
  pool). A delivery holds one unit until ``Consumer.release`` — independently of the
  ack, so both ack-before-handling (2010 Nova) and ack-after-handling are expressible.
* Fair dispatch: among the free consumers of a queue, the one that has waited
  longest since its last delivery (from any of its queues) gets the message. A
  consumer that regains capacity takes the message that has waited longest across
  its queues (oldest ``enqueued_at``, then publish order).
* Manual ack. Acking twice, acking an unknown tag, a tag of another consumer, or
  after the consumer closed raises :class:`ChannelError` (RabbitMQ's
  ``PRECONDITION_FAILED - unknown delivery tag``). ``nack(requeue=True)`` puts the
  message back at the head of its queue with ``redelivered=True``;
  ``nack(requeue=False)`` drops it (counted as ``dropped``; there is no DLX).
* Crash semantics: ``Consumer.close`` requeues every unacked delivery, including the
  ones still in flight, at the head of its queue in original order with
  ``redelivered=True``; other consumers get them at once.
* Broker restarts (``crash``, ``restart``: ``kill -9`` of the node and its start): while
  down, ``publish``, ``declare_queue``, ``bind`` and ``consume`` raise
  :class:`BrokerDown` and every consumer is cut off (its unacked deliveries go back to
  their queues). At restart a transient queue is gone with its bindings and messages
  (until declared again); a durable queue keeps its persistent messages and loses its
  transient ones, as RabbitMQ recovers classic queues from disk. Declaring a queue
  again with the other durability is a :class:`ChannelError` (PRECONDITION_FAILED).
* Per-delivery latency drawn from a caller-supplied, seeded callable.
* Per-queue statistics: counts, current and peak depth, unacked, wait-time mean and
  percentiles.
* Determinism: no randomness, no iteration over unordered containers; the same calls
  in the same order give the same dispatch decisions and delivery tags.

Not supported
=============

* The exchange's durability (what a transient one loses, its bindings, goes with the
  transient queues), and a publish the broker got but never confirmed (it is atomic here).
* Publisher confirms (``basic.ack`` to the publisher) and ``basic.return`` as a
  message: the mandatory check is the synchronous return value of ``publish``.
* Publish latency: the message is routed at ``env.now``; only delivery is delayed.
* Queue and message TTLs, ``x-expires``, ``auto_delete``, exclusive queues, queue
  length limits, priorities, dead-letter exchanges.
* Other exchange types (fanout, direct, headers), several exchanges, and wildcard
  bindings (``*`` and ``#`` in a binding key are rejected with ``ValueError``).
* The consumer delivery-ack timeout (30 min in RabbitMQ): an unacked delivery stays
  unacked forever until ack, nack or close.
* ``basic.qos`` exactly: RabbitMQ frees a prefetch slot on *ack*; here capacity is
  freed on ``release`` (the worker finished), which is what bounds a Nova service.
* ``multiple=True`` acks, ``basic.get``, ``basic.cancel`` without closing,
  consumer priorities, single-active-consumer, channel-scoped tags (tags here are
  unique per broker), memory/disk alarms and publisher flow control.
* Body validation: the body is opaque text; poison-message handling is the
  consumer's job.

Theory of operation
===================

There is no SimPy process per queue or per consumer. Every operation is a plain
method call that updates the state and dispatches what became possible; only a
delivery latency greater than zero schedules an event (``env.timeout`` with a
callback). Zero-latency deliveries are handed over synchronously, before the call
that caused them returns, through a small outbox drained in a loop, so a consumer
that acks and releases inside ``on_delivery`` does not recurse once per message.
The one exception is ``consume()``: messages already waiting for the new consumer
are delivered by a zero-delay event at the same virtual time, so that its
``on_delivery`` never runs before the caller holds the ``Consumer``.

The broker keeps one invariant: *a queue with ready messages has no free consumer*.
So a publish either hands the message to a free consumer or appends it to the
queue, and a consumer that regains capacity either pulls the oldest ready message
of its queues or becomes available. Available consumers of a queue sit in a heap
keyed by a stamp that is renewed at each of their deliveries; a renewed stamp makes
older heap entries stale (they are skipped lazily, and the heap is compacted when
stale entries pile up).

Each message copy has an internal record that is in exactly one place: a queue's
ready deque or one consumer's unacked table. A delivery tag is assigned when the
broker chooses a consumer; the :class:`Delivery` value is built when the latency
has elapsed and ``on_delivery`` is called. The time from ``enqueued_at`` to that
choice is the recorded queue wait.
"""

from __future__ import annotations

import heapq
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from common.effects.quick_init import quick_init
from sim import broker_stats
from sim.broker_restart import BrokerDown, Restarts

__all__ = ["EXCHANGE", "Broker", "BrokerDown", "ChannelError", "Consumer", "Delivery"]

EXCHANGE = "nova"

_WILDCARDS = ("*", "#")


class ChannelError(Exception):
    """As RabbitMQ's PRECONDITION_FAILED - unknown delivery tag (double ack, ack of an
    unknown tag, ack after the consumer closed)."""

    reply_code = 406  # AMQP PRECONDITION_FAILED


@quick_init  # made once per message handed out: the cheaper __init__ of the effects
@dataclass(frozen=True)
class Delivery:
    """One message as handed to a consumer (``basic.deliver``)."""

    queue: str
    body: str  # JSON text, opaque to the broker
    delivery_tag: int  # unique per broker, increasing
    redelivered: bool
    published_at: float  # env.now at the first publish, kept on requeue
    enqueued_at: float  # env.now when it (re)entered the queue
    delivered_at: float  # env.now when handed to on_delivery
    consumer_tag: str


class _Message:
    """The broker's record of one message copy in one queue."""

    __slots__ = ("body", "delivered", "enqueued_at", "persistent", "published_at", "queue", "redelivered", "seq")

    def __init__(self, queue: _Queue, body: str, now: float, seq: int, persistent: bool = False):
        self.queue = queue
        self.body = body
        self.persistent = persistent  # delivery mode 2: kept by a durable queue across a restart
        self.published_at = now
        self.enqueued_at = now
        self.redelivered = False
        self.seq = seq  # publish order, the tie-break between equal enqueued_at
        self.delivered = False  # on_delivery called for the current delivery tag


class _Queue:
    __slots__ = (
        "acked",
        "avail",
        "consumers",
        "declared",
        "delivered",
        "dropped",
        "durable",
        "lost",
        "name",
        "peak_depth",
        "published",
        "ready",
        "redelivered",
        "requeued",
        "unacked",
        "waits",
    )

    def __init__(self, name: str, durable: bool = False):
        self.name = name
        self.durable = durable
        self.declared = True  # False once a restart removed a transient queue
        self.ready: deque[_Message] = deque()
        self.consumers: list[Consumer] = []
        # heap of (stamp, consumer id, consumer); valid iff stamp == consumer._stamp
        # and the consumer is open. A valid entry means the consumer has free capacity.
        self.avail: list = []
        self.published = 0
        self.delivered = 0
        self.acked = 0
        self.redelivered = 0
        self.requeued = 0
        self.dropped = 0
        self.lost = 0  # ready messages a broker restart did not keep
        self.unacked = 0
        self.peak_depth = 0
        self.waits = array("d")


class Consumer:
    """One consumer over one or more queues (like one channel consuming several)."""

    __slots__ = ("_broker", "_closed", "_held", "_id", "_on_delivery", "_queues", "_stamp", "_unacked", "capacity", "tag")

    def __init__(self, broker: Broker, queues: list[_Queue], capacity: int, on_delivery, tag: str, cid: int):
        self.tag = tag
        self.capacity = capacity
        self._broker = broker
        self._queues = queues
        self._on_delivery = on_delivery
        self._unacked: dict[int, _Message] = {}  # delivery tag -> message, in delivery order
        self._held: set[int] = set()  # delivery tags occupying capacity
        self._closed = False
        self._stamp = 0
        self._id = cid

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._held)}/{self.capacity}"
        return f"<Consumer {self.tag!r} {state} queues={self.queues}>"

    @property
    def queues(self) -> tuple[str, ...]:
        return tuple(q.name for q in self._queues)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def unacked(self) -> int:
        """Deliveries not yet acked or nacked, including those still in flight."""
        return len(self._unacked)

    @property
    def in_use(self) -> int:
        """Capacity units occupied (deliveries not yet released)."""
        return len(self._held)

    def _settle(self, delivery: Delivery, verb: str) -> _Message:
        tag = delivery.delivery_tag
        if self._closed:
            raise ChannelError(
                f"PRECONDITION_FAILED - unknown delivery tag {tag} ({verb} on consumer {self.tag!r} after it closed)"
            )
        msg = self._unacked.get(tag)
        if msg is None or not msg.delivered:
            raise ChannelError(
                f"PRECONDITION_FAILED - unknown delivery tag {tag} ({verb} on consumer {self.tag!r})"
            )
        del self._unacked[tag]
        msg.queue.unacked -= 1
        return msg

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge: the message is gone. Raises ChannelError for an unknown or
        already settled tag, or after close."""
        self._settle(delivery, "ack").queue.acked += 1

    def nack(self, delivery: Delivery, requeue: bool) -> None:
        """Reject: back at the head of its queue with redelivered=True, or dropped."""
        msg = self._settle(delivery, "nack")
        q = msg.queue
        if not requeue:
            q.dropped += 1
            return
        broker = self._broker
        q.requeued += 1
        msg.redelivered = True
        msg.enqueued_at = broker.env.now
        q.ready.appendleft(msg)
        broker._drain(q)
        broker._flush()

    def release(self, delivery: Delivery) -> None:
        """Give back the capacity unit held by this delivery and dispatch more.
        A no-op after close; releasing twice raises ValueError."""
        if self._closed:
            return
        held = self._held
        tag = delivery.delivery_tag
        if tag not in held:
            raise ValueError(
                f"consumer {self.tag!r} does not hold delivery tag {tag} (released twice, or not its delivery)"
            )
        was_full = len(held) >= self.capacity
        held.remove(tag)
        if was_full:
            broker = self._broker
            broker._refill(self)
            broker._flush()

    def close(self, _dispatch: bool = True) -> None:
        """The consumer's connection died: requeue every unacked delivery (in flight
        too) at the head of its queue, in original order, redelivered=True. Idempotent.
        (``Broker.crash`` closes every consumer with ``_dispatch=False``: the others are
        going too, so nothing is handed on.)"""
        if self._closed:
            return
        self._closed = True
        broker = self._broker
        for q in self._queues:
            q.consumers.remove(self)
        if broker._open_tags.get(self.tag) is self:
            del broker._open_tags[self.tag]
        pending = list(self._unacked.values())
        self._unacked.clear()
        self._held.clear()
        groups: dict[_Queue, list[_Message]] = {}  # insertion-ordered: first appearance
        for msg in pending:
            groups.setdefault(msg.queue, []).append(msg)
        now = broker.env.now
        for q, msgs in groups.items():
            for msg in msgs:
                msg.redelivered = True
                msg.enqueued_at = now
            q.requeued += len(msgs)
            q.unacked -= len(msgs)
            q.ready.extendleft(reversed(msgs))
            if _dispatch:
                broker._drain(q)
        if _dispatch:
            broker._flush()


class Broker(Restarts):
    """The ``nova`` topic exchange, its queues and their consumers, in virtual time."""

    exchange = EXCHANGE

    def __init__(self, env, delivery_latency: Callable[[], float] | None = None):
        """delivery_latency: a zero-arg callable returning seconds (drawn per delivery
        from a seeded stream by the caller) or None for 0. It is the time between the
        broker choosing a consumer and on_delivery being called."""
        self.env = env
        self._latency = delivery_latency
        self._queues: dict[str, _Queue] = {}
        self._bindings: dict[str, list[_Queue]] = {}
        self._open_tags: dict[str, Consumer] = {}
        self._msg_seq = 0
        self._stamp_seq = 0
        self._consumer_seq = 0
        self._next_tag = 1
        self._outbox: deque = deque()
        self._flushing = False
        self.unroutable = 0
        #: Between crash() and restart(); every client operation raises BrokerDown.
        self.down = False
        #: Ready messages restarts did not keep, in all; and the restarts so far.
        self.lost = 0
        self.restarts = 0

    # -- topology ---------------------------------------------------------------

    def declare_queue(self, name: str, durable: bool = False) -> None:
        """Declare a queue (idempotent); ``durable``: it outlives a restart with its
        persistent messages. Raises ChannelError when it exists with the other durability."""
        self._check_up()
        q = self._queues.get(name)
        if q is None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"queue name must be a non-empty string, got {name!r}")
            self._queues[name] = _Queue(name, durable)
        elif not q.declared:  # removed by a restart: a new queue (its statistics go on)
            q.declared, q.durable = True, durable
        elif q.durable != durable:
            raise ChannelError(f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue {name!r}: "
                               f"received {durable} but current is {q.durable}")

    def bind(self, queue: str, routing_key: str) -> None:
        """Bind a declared queue to the exchange with an exact routing key (idempotent)."""
        self._check_up()
        q = self._queue(queue)
        if any(w in routing_key for w in _WILDCARDS):
            raise ValueError(f"wildcard binding {routing_key!r} is not supported: exact routing keys only")
        bound = self._bindings.setdefault(routing_key, [])
        if q not in bound:
            bound.append(q)

    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None or not q.declared:
            raise KeyError(f"queue {name!r} is not declared on exchange {EXCHANGE!r}; call declare_queue() first")
        return q

    # -- publishing -------------------------------------------------------------

    def publish(self, routing_key: str, body: str, persistent: bool = False) -> bool:
        """Route to every queue bound with exactly this key. Returns False when no
        queue is bound (published as mandatory). Never blocks. ``persistent``: delivery
        mode 2 (kept across a restart by a durable queue). Raises BrokerDown when down."""
        self._check_up()
        queues = self._bindings.get(routing_key)
        if not queues:
            self.unroutable += 1
            return False
        now = self.env.now
        for q in queues:
            self._msg_seq += 1
            msg = _Message(q, body, now, self._msg_seq, persistent)
            q.published += 1
            ready = q.ready
            if not ready:
                c = self._pop_available(q)
                if c is not None:
                    self._dispatch(q, msg, c)
                    continue
            ready.append(msg)
            if len(ready) > q.peak_depth:
                q.peak_depth = len(ready)
        if self._outbox:
            self._flush()
        return True

    # -- consuming --------------------------------------------------------------

    def consume(self, queues: Iterable[str], capacity: int, on_delivery, tag: str) -> Consumer:
        """Start one consumer over several declared queues. A delivery occupies one
        unit of capacity until consumer.release(delivery).

        Messages already waiting are taken at once, but with zero latency their
        on_delivery runs just after consume() returns (same env.now, via a zero-delay
        event), never inside it."""
        if isinstance(queues, str):
            raise TypeError("consume() takes a list of queue names, not a string")
        self._check_up()
        qs: list[_Queue] = []
        for name in queues:
            q = self._queue(name)
            if q not in qs:
                qs.append(q)
        if not qs:
            raise ValueError("consume() needs at least one queue")
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        if tag in self._open_tags:
            raise ValueError(f"consumer tag {tag!r} is already in use by an open consumer")
        self._consumer_seq += 1
        c = Consumer(self, qs, capacity, on_delivery, tag, self._consumer_seq)
        self._stamp_seq += 1
        c._stamp = self._stamp_seq
        self._open_tags[tag] = c
        for q in qs:
            q.consumers.append(c)
        self._refill(c)
        if self._outbox and not self._flushing:
            # Messages that were waiting for this consumer are handed over at the same
            # virtual time but after consume() returns, so on_delivery can already use
            # the Consumer (to ack or release) that consume() is about to return.
            self.env.timeout(0).callbacks.append(self._flush_cb)
        return c

    # -- statistics -------------------------------------------------------------

    def queue_depths(self) -> dict[str, int]:
        """Ready (not yet delivered) messages per queue, in declaration order."""
        return {name: len(q.ready) for name, q in self._queues.items()}

    def queue_stats(self) -> dict[str, dict]:
        """Per queue counters, depths and queue-wait statistics (sim.broker_stats)."""
        return broker_stats.queue_stats(self._queues)

    # -- dispatch machinery -----------------------------------------------------

    def _pop_available(self, q: _Queue) -> Consumer | None:
        heap = q.avail
        while heap:
            stamp, _, c = heapq.heappop(heap)
            if stamp == c._stamp and not c._closed:
                return c
        return None

    def _make_available(self, c: Consumer) -> None:
        entry = (c._stamp, c._id, c)
        for q in c._queues:
            heap = q.avail
            heapq.heappush(heap, entry)
            if len(heap) > 2 * len(q.consumers) + 16:
                heap[:] = [e for e in heap if e[0] == e[2]._stamp and not e[2]._closed]
                heapq.heapify(heap)

    def _dispatch(self, q: _Queue, msg: _Message, c: Consumer) -> None:
        """Hand msg (already out of the ready deque) to consumer c, which has room."""
        latency = self._latency
        delay = latency() if latency is not None else 0
        if delay < 0:
            raise ValueError(f"delivery_latency returned a negative delay {delay!r}")
        self._stamp_seq += 1
        c._stamp = self._stamp_seq
        tag = self._next_tag
        self._next_tag = tag + 1
        msg.delivered = False
        q.delivered += 1
        q.unacked += 1
        if msg.redelivered:
            q.redelivered += 1
        q.waits.append(self.env.now - msg.enqueued_at)
        c._unacked[tag] = msg
        held = c._held
        held.add(tag)
        if len(held) < c.capacity:
            self._make_available(c)
        if delay > 0:
            ev = self.env.timeout(delay)
            ev.callbacks.append(partial(self._arrived, c, msg, tag))
        else:
            self._outbox.append((c, msg, tag))

    def _arrived(self, c: Consumer, msg: _Message, tag: int, _event) -> None:
        self._outbox.append((c, msg, tag))
        self._flush()

    def _flush_cb(self, _event) -> None:
        self._flush()

    def _flush(self) -> None:
        """Call on_delivery for due deliveries, in order, without recursion."""
        if self._flushing:
            return
        self._flushing = True
        outbox = self._outbox
        try:
            while outbox:
                c, msg, tag = outbox.popleft()
                if c._unacked.get(tag) is not msg:
                    continue  # the consumer closed meanwhile: msg was requeued
                msg.delivered = True
                c._on_delivery(
                    Delivery(
                        msg.queue.name, msg.body, tag, msg.redelivered,
                        msg.published_at, msg.enqueued_at, self.env.now, c.tag,
                    )
                )
        finally:
            self._flushing = False

    def _drain(self, q: _Queue) -> None:
        """Give q's ready messages to its free consumers (after a requeue)."""
        ready = q.ready
        while ready:
            c = self._pop_available(q)
            if c is None:
                break
            self._dispatch(q, ready.popleft(), c)
        if len(ready) > q.peak_depth:
            q.peak_depth = len(ready)

    def _refill(self, c: Consumer) -> None:
        """c has room it was not advertising: pull the oldest ready messages of its
        queues, then advertise whatever room is left."""
        qs = c._queues
        dispatched = False
        while len(c._held) < c.capacity:
            if len(qs) == 1:
                q = qs[0]
                if not q.ready:
                    break
            else:
                oldest = None
                head = None
                for cand in qs:
                    if cand.ready:
                        h = cand.ready[0]
                        if head is None or (h.enqueued_at, h.seq) < (head.enqueued_at, head.seq):
                            oldest, head = cand, h
                if oldest is None:
                    break
                q = oldest
            self._dispatch(q, q.ready.popleft(), c)
            dispatched = True
        if not dispatched and len(c._held) < c.capacity:
            self._make_available(c)

