"""One set of test bodies against the SimPy broker model (sim/broker.py) and RabbitMQ.

Each backend has a small blocking adapter: ``declare`` (a queue bound to ``nova`` with its
own name), ``publish`` (mandatory: False when unroutable), ``consume`` (manual ack,
prefetch), ``wait_for`` (run until a condition holds or a timeout passes: virtual time
in the sim, wall time against RabbitMQ), ``depth`` (ready messages). A consumer's
``kill()`` is a crash: the sim closes the Consumer, the real adapter closes the
consumer's connection without acking. Call/reply is the 2010 pattern at broker level:
a reply queue named per call, the server publishes the reply to it.
"""

from __future__ import annotations

import json
import os
import select
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import simpy

from sim.broker import Broker


@dataclass
class Got:
    """A delivery as both adapters report it."""

    body: str
    redelivered: bool
    queue: str
    raw: Any


def unique(prefix="contract"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# -- sim adapter ---------------------------------------------------------------------


class SimConsumer:
    def __init__(self, adapter, queues, prefetch, on_delivery):
        self.deliveries: list[Got] = []
        self._on_delivery = on_delivery
        adapter._tags += 1
        self._consumer = adapter.broker.consume(list(queues), prefetch, self._arrived, tag=f"c{adapter._tags}")

    def _arrived(self, d):
        got = Got(d.body, d.redelivered, d.queue, d)
        self.deliveries.append(got)
        if self._on_delivery is not None:
            self._on_delivery(self, got)

    def ack(self, got):
        self._consumer.ack(got.raw)
        self._consumer.release(got.raw)

    def kill(self):
        self._consumer.close()


class SimAdapter:
    def __init__(self):
        self.env = simpy.Environment()
        self.broker = Broker(self.env)
        self._tags = 0

    def now(self):
        return self.env.now

    def declare(self, name):
        self.broker.declare_queue(name)
        self.broker.bind(name, name)

    def publish(self, key, body) -> bool:
        return self.broker.publish(key, body)

    def consume(self, queues, prefetch, on_delivery=None):
        return SimConsumer(self, queues, prefetch, on_delivery)

    def wait_for(self, pred, timeout) -> bool:
        deadline = self.env.now + timeout
        while not pred() and self.env.peek() <= deadline:
            self.env.step()
        if not pred() and self.env.now < deadline:
            self.env.run(until=deadline)
        return bool(pred())

    def depth(self, name):
        return self.broker.queue_depths()[name]

    def close(self):
        pass


# -- RabbitMQ adapter ---------------------------------------------------------------


class RealConsumer:
    def __init__(self, adapter, queues, prefetch, on_delivery):
        import kombu

        self.deliveries: list[Got] = []
        self._on_delivery = on_delivery
        self.conn = kombu.Connection(adapter.url, connect_timeout=5)
        self.conn.connect()
        self.channel = self.conn.channel()
        self.channel.basic_qos(0, prefetch, True)
        for name in queues:
            self.channel.basic_consume(queue=name, no_ack=False, callback=self._arrived)
        self.alive = True

    def _arrived(self, message):
        body = message.body.decode() if isinstance(message.body, bytes) else message.body
        got = Got(body, message.delivery_info["redelivered"], message.delivery_info["routing_key"], message)
        self.deliveries.append(got)
        if self._on_delivery is not None:
            self._on_delivery(self, got)

    def ack(self, got):
        self.channel.basic_ack(got.raw.delivery_info["delivery_tag"])

    def kill(self):
        self.alive = False
        self.conn.release()

    def pump(self):
        if not self.alive:
            return
        sock = self.conn.connection.sock
        while self.alive and select.select([sock], [], [], 0)[0]:
            self.conn.drain_events(timeout=1)


class RealAdapter:
    def __init__(self, url):
        import kombu

        from real import transport

        self.url = url
        self.transport = transport
        self.consumers: list[RealConsumer] = []
        self.declared: list[str] = []
        self.conn = kombu.Connection(url, connect_timeout=5)
        self.conn.connect()
        self.channel = self.conn.channel()
        self.channel.confirm_select()
        self._returned = []
        self.channel.events["basic_return"].add(lambda exc, exchange, key, msg: self._returned.append(key))

    def now(self):
        return time.monotonic()

    def declare(self, name):
        self.transport.topic_queue(name)(self.channel).declare()
        self.declared.append(name)

    def publish(self, key, body) -> bool:
        import amqp

        self._returned.clear()
        self.channel.basic_publish_confirm(amqp.Message(body), exchange=self.transport.EXCHANGE, routing_key=key,
                                           mandatory=True)
        return key not in self._returned  # basic.return arrives before the confirm

    def consume(self, queues, prefetch, on_delivery=None):
        consumer = RealConsumer(self, queues, prefetch, on_delivery)
        self.consumers.append(consumer)
        return consumer

    def wait_for(self, pred, timeout) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            for c in self.consumers:
                c.pump()
            if pred():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            socks = [c.conn.connection.sock for c in self.consumers if c.alive]
            if socks:
                select.select(socks, [], [], min(remaining, 0.05))
            else:
                time.sleep(min(remaining, 0.05))

    def depth(self, name):
        return self.transport.queue_depths(self.url, [name])[name]

    def close(self):
        for c in self.consumers:
            if c.alive:
                c.kill()
        if self.declared:
            self.transport.delete_queues(self.url, self.declared)
        self.conn.release()


@pytest.fixture(params=["sim", "real"])
def broker(request):
    if request.param == "sim":
        adapter = SimAdapter()
    else:
        url = request.getfixturevalue("amqp_url")
        try:
            import kombu  # noqa: F401
        except ImportError as e:  # CI must have it (a dependency of real mode)
            if os.environ.get("CI"):
                pytest.fail(f"kombu is not installed: {e}")
            pytest.skip(f"kombu is not installed: {e}")
        adapter = RealAdapter(url)
    yield adapter
    adapter.close()


def acking(consumer, got):
    consumer.ack(got)


# -- the contract -------------------------------------------------------------------


def test_publish_consume_ack(broker):
    """Published messages arrive once, in order, not redelivered; acked ones are gone."""
    q = unique()
    broker.declare(q)
    c = broker.consume([q], prefetch=10)
    for body in ("a", "b", "c"):
        assert broker.publish(q, body)
    assert broker.wait_for(lambda: len(c.deliveries) == 3, timeout=5)
    assert [(d.body, d.redelivered) for d in c.deliveries] == [("a", False), ("b", False), ("c", False)]
    for d in c.deliveries:
        c.ack(d)
    c.kill()
    assert broker.depth(q) == 0


def test_exact_routing_keys(broker):
    """A publish reaches only the queue bound with exactly its routing key."""
    topic = unique()
    broker.declare(topic)
    broker.declare(f"{topic}.host1")
    shared, private = broker.consume([topic], 10), broker.consume([f"{topic}.host1"], 10)
    assert broker.publish(f"{topic}.host1", "x")
    assert broker.wait_for(lambda: private.deliveries, timeout=5)
    assert not broker.wait_for(lambda: shared.deliveries, timeout=0.1)


def test_competing_consumers_share_the_topic(broker):
    """Two consumers of one queue each get some of its messages, every message once."""
    q = unique()
    broker.declare(q)
    a, b = broker.consume([q], 1, acking), broker.consume([q], 1, acking)
    sent = [f"m{i}" for i in range(10)]
    for body in sent:
        assert broker.publish(q, body)
    assert broker.wait_for(lambda: len(a.deliveries) + len(b.deliveries) == 10, timeout=5)
    assert a.deliveries and b.deliveries
    assert sorted(d.body for d in a.deliveries + b.deliveries) == sorted(sent)


def test_unacked_deliveries_requeued_when_consumer_dies(broker):
    """A consumer that dies without acking gives its messages back, redelivered=True, in order."""
    q = unique()
    broker.declare(q)
    a = broker.consume([q], prefetch=2)
    broker.publish(q, "m1")
    broker.publish(q, "m2")
    assert broker.wait_for(lambda: len(a.deliveries) == 2, timeout=5)
    assert not any(d.redelivered for d in a.deliveries)
    a.kill()
    b = broker.consume([q], prefetch=2)
    assert broker.wait_for(lambda: len(b.deliveries) == 2, timeout=5)
    assert [(d.body, d.redelivered) for d in b.deliveries] == [("m1", True), ("m2", True)]


def test_unroutable_publish_detected(broker):
    """A mandatory publish to a key no queue is bound to is reported, not lost silently."""
    q = unique()
    broker.declare(q)
    assert broker.publish(unique("nobody"), "x") is False
    assert broker.publish(f"{q}.elsewhere", "x") is False
    assert broker.publish(q, "x") is True


def _serve_doubling(broker):
    def serve(consumer, got):
        request = json.loads(got.body)
        consumer.ack(got)
        broker.publish(request["reply_to"], json.dumps({"msg_id": request["msg_id"], "result": request["x"] * 2}))

    return serve


def test_call_reply(broker):
    """A request carrying its reply queue gets the server's reply there, matched by msg_id."""
    topic, reply_q = unique(), unique("reply")
    broker.declare(topic)
    broker.declare(reply_q)
    broker.consume([topic], 1, _serve_doubling(broker))
    replies = broker.consume([reply_q], 1)
    assert broker.publish(topic, json.dumps({"x": 21, "reply_to": reply_q, "msg_id": "m1"}))
    assert broker.wait_for(lambda: replies.deliveries, timeout=5)
    assert json.loads(replies.deliveries[0].body) == {"msg_id": "m1", "result": 42}


def test_call_timeout(broker):
    """With no consumer on the topic the request waits and no reply comes before the timeout."""
    topic, reply_q = unique(), unique("reply")
    broker.declare(topic)
    broker.declare(reply_q)
    replies = broker.consume([reply_q], 1)
    start = broker.now()
    assert broker.publish(topic, json.dumps({"x": 1, "reply_to": reply_q, "msg_id": "m1"}))
    assert not broker.wait_for(lambda: replies.deliveries, timeout=0.3)
    assert broker.now() - start >= 0.3
    assert broker.depth(topic) == 1
