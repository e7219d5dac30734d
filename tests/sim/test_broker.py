"""Behaviour of the SimPy broker model (sim/broker.py)."""

import pytest
import simpy

from sim.broker import Broker, ChannelError, Delivery


def make(queues=("compute", "compute.host1", "compute.host2"), latency=None):
    env = simpy.Environment()
    broker = Broker(env, delivery_latency=latency)
    for name in queues:
        broker.declare_queue(name)
        broker.bind(name, name)
    return env, broker


def sink(out=None):
    out = [] if out is None else out
    return out, out.append


def test_exact_routing():
    """A publish reaches only the queue bound with exactly its key."""
    _env, broker = make()
    assert broker.publish("compute.host1", "{}")
    assert broker.queue_depths() == {"compute": 0, "compute.host1": 1, "compute.host2": 0}


def test_unroutable_returns_false():
    """A publish with no bound queue returns False and is counted."""
    _env, broker = make()
    assert broker.publish("compute.host9", "{}") is False
    assert broker.publish("compute.*", "{}") is False
    assert broker.unroutable == 2


def test_wildcard_binding_rejected():
    """Binding keys with * or # are refused: exact keys only."""
    _env, broker = make()
    with pytest.raises(ValueError):
        broker.bind("compute", "compute.*")


def test_double_bind_and_declare_deliver_once():
    """Declaring and binding twice is idempotent: one publish, one delivery."""
    _env, broker = make()
    broker.declare_queue("compute")
    broker.bind("compute", "compute")
    got, cb = sink()
    broker.consume(["compute"], 10, cb, "c1")
    broker.publish("compute", "x")
    assert [d.body for d in got] == ["x"]


def test_one_key_routes_to_every_bound_queue():
    """Two queues bound with the same key each get a copy."""
    _env, broker = make(("a", "b"))
    broker.bind("b", "a")
    broker.publish("a", "x")
    assert broker.queue_depths() == {"a": 1, "b": 1}


def test_consume_undeclared_queue_raises_keyerror():
    """Consuming a queue that was never declared is a KeyError naming it."""
    _env, broker = make()
    with pytest.raises(KeyError, match="network"):
        broker.consume(["network"], 1, print, "c1")


def test_publish_without_consumer_stays_ready():
    """A message with no consumer waits and goes to the first consumer that appears."""
    env, broker = make()
    broker.publish("compute", "x")
    env.run(until=5)
    got, cb = sink()
    broker.consume(["compute"], 1, cb, "late")
    env.run()
    assert [(d.body, d.enqueued_at, d.delivered_at) for d in got] == [("x", 0, 5)]


def test_waiting_messages_delivered_after_consume_returns():
    """on_delivery for already-waiting messages runs after consume() returns, at the same time."""
    env, broker = make()
    broker.publish("compute", "x")
    got, cb = sink()
    c = broker.consume(["compute"], 1, cb, "c1")
    assert got == [] and c.in_use == 1
    env.run()
    assert [(d.body, d.delivered_at) for d in got] == [("x", 0)]


def test_zero_latency_is_synchronous():
    """With no latency on_delivery runs inside publish and no event is scheduled."""
    env, broker = make()
    got, cb = sink()
    broker.consume(["compute"], 1, cb, "c1")
    broker.publish("compute", "x")
    assert len(got) == 1 and env.peek() == float("inf")


def test_competing_consumers_round_robin():
    """Free consumers of a queue take turns."""
    _env, broker = make()
    got = []
    for tag in ("a", "b", "c"):
        broker.consume(["compute"], 10, got.append, tag)
    for i in range(6):
        broker.publish("compute", str(i))
    assert [d.consumer_tag for d in got] == ["a", "b", "c", "a", "b", "c"]


def test_round_robin_counts_deliveries_from_other_queues():
    """A consumer just served from its host queue goes behind the others on the topic queue."""
    _env, broker = make()
    got = []
    broker.consume(["compute", "compute.host1"], 10, got.append, "h1")
    broker.consume(["compute", "compute.host2"], 10, got.append, "h2")
    broker.publish("compute.host1", "direct")
    broker.publish("compute", "shared")
    assert [(d.body, d.consumer_tag) for d in got] == [("direct", "h1"), ("shared", "h2")]


def test_capacity_limits_in_flight_and_release_pulls_next():
    """A full consumer gets nothing more until it releases a delivery."""
    _env, broker = make()
    got, cb = sink()
    c = broker.consume(["compute"], 2, cb, "c1")
    for i in range(4):
        broker.publish("compute", str(i))
    assert [d.body for d in got] == ["0", "1"] and c.in_use == 2
    c.release(got[0])
    assert [d.body for d in got] == ["0", "1", "2"] and broker.queue_depths()["compute"] == 1


def test_ack_does_not_free_capacity():
    """Acking keeps the capacity unit; only release gives it back."""
    _env, broker = make()
    got, cb = sink()
    c = broker.consume(["compute"], 1, cb, "c1")
    broker.publish("compute", "a")
    broker.publish("compute", "b")
    c.ack(got[0])
    assert len(got) == 1 and c.unacked == 0 and c.in_use == 1


def test_release_before_ack():
    """A released delivery can still be acked, and the next one flows."""
    _env, broker = make()
    got, cb = sink()
    c = broker.consume(["compute"], 1, cb, "c1")
    broker.publish("compute", "a")
    broker.publish("compute", "b")
    c.release(got[0])
    c.ack(got[0])
    assert [d.body for d in got] == ["a", "b"] and c.unacked == 1 and c.in_use == 1


def test_release_twice_raises():
    """Releasing the same delivery twice is a ValueError."""
    _env, broker = make()
    got, cb = sink()
    c = broker.consume(["compute"], 1, cb, "c1")
    broker.publish("compute", "a")
    c.release(got[0])
    with pytest.raises(ValueError):
        c.release(got[0])


def test_oldest_first_across_queues():
    """A consumer with room takes the longest-waiting message among its queues."""
    env, broker = make()
    got, cb = sink()
    c = broker.consume(["compute", "compute.host1"], 1, cb, "h1")
    broker.publish("compute", "busy")
    env.run(until=1)
    broker.publish("compute.host1", "h-old")
    env.run(until=2)
    broker.publish("compute", "t-new")
    c.release(got[0])
    c.release(got[1])
    assert [d.body for d in got] == ["busy", "h-old", "t-new"]


def test_ack_twice_raises_channel_error():
    """A second ack of the same tag is PRECONDITION_FAILED."""
    _env, broker = make()
    got, cb = sink()
    c = broker.consume(["compute"], 1, cb, "c1")
    broker.publish("compute", "a")
    c.ack(got[0])
    with pytest.raises(ChannelError, match="unknown delivery tag"):
        c.ack(got[0])


def test_ack_unknown_or_foreign_tag_raises():
    """Acking a made-up tag or another consumer's delivery is a channel error."""
    _env, broker = make()
    got, cb = sink()
    c1 = broker.consume(["compute"], 1, cb, "c1")
    c2 = broker.consume(["compute.host1"], 1, cb, "c2")
    broker.publish("compute", "a")
    with pytest.raises(ChannelError):
        c2.ack(got[0])
    with pytest.raises(ChannelError):
        c1.ack(Delivery("compute", "a", 999, False, 0, 0, 0, "c1"))


def test_channel_error_survives_simpy_reraise():
    """ChannelError rebuilds from its positional args, as SimPy re-raises it."""
    err = ChannelError("PRECONDITION_FAILED - unknown delivery tag 3")
    assert str(type(err)(*err.args)) == str(err)


def test_close_requeues_unacked_at_head_for_another_consumer():
    """A crashed consumer's unacked deliveries go back first, in order, redelivered."""
    env, broker = make()
    _got1, cb1 = sink()
    c1 = broker.consume(["compute"], 2, cb1, "c1")
    for body in ("a", "b", "c"):
        broker.publish("compute", body)
    env.run(until=3)
    got2, cb2 = sink()
    broker.consume(["compute"], 3, cb2, "c2")
    c1.close()
    assert [(d.body, d.redelivered) for d in got2] == [("c", False), ("a", True), ("b", True)]
    assert got2[1].published_at == 0 and got2[1].enqueued_at == 3


def test_close_puts_requeued_before_waiting_messages():
    """Requeued deliveries sit at the head, ahead of messages already waiting."""
    env, broker = make()
    _got, cb = sink()
    c1 = broker.consume(["compute"], 1, cb, "c1")
    broker.publish("compute", "a")
    broker.publish("compute", "b")
    c1.close()
    got2, cb2 = sink()
    broker.consume(["compute"], 1, cb2, "c2")
    env.run()
    assert [(d.body, d.redelivered) for d in got2] == [("a", True)]


def test_acked_deliveries_not_requeued_on_close():
    """Only unacked deliveries come back after a crash."""
    _env, broker = make()
    got, cb = sink()
    c1 = broker.consume(["compute"], 2, cb, "c1")
    broker.publish("compute", "a")
    broker.publish("compute", "b")
    c1.ack(got[0])
    c1.close()
    assert broker.queue_depths()["compute"] == 1
    assert broker.queue_stats()["compute"]["requeued"] == 1


def test_after_close_ack_raises_release_is_noop_close_idempotent():
    """A closed consumer rejects acks, ignores releases and can be closed again."""
    _env, broker = make()
    got, cb = sink()
    c = broker.consume(["compute"], 1, cb, "c1")
    broker.publish("compute", "a")
    c.close()
    c.release(got[0])
    c.close()
    with pytest.raises(ChannelError):
        c.ack(got[0])
    broker.publish("compute", "b")
    assert len(got) == 1 and broker.queue_depths()["compute"] == 2


def test_close_requeues_in_flight_and_never_delivers_them():
    """A delivery still in flight at close is requeued and its callback never fires."""
    env, broker = make(latency=lambda: 1.0)
    got, cb = sink()
    c1 = broker.consume(["compute"], 1, cb, "c1")
    broker.publish("compute", "a")
    env.run(until=0.5)
    c1.close()
    got2, cb2 = sink()
    broker.consume(["compute"], 1, cb2, "c2")
    env.run()
    assert got == [] and [(d.body, d.redelivered, d.delivered_at) for d in got2] == [("a", True, 1.5)]


def test_nack_requeue_goes_to_head_redelivered():
    """nack(requeue=True) puts the message back first with redelivered=True."""
    _env, broker = make()
    got, cb = sink()
    c = broker.consume(["compute"], 1, cb, "c1")
    broker.publish("compute", "a")
    broker.publish("compute", "b")
    c.nack(got[0], requeue=True)
    c.release(got[0])
    assert [(d.body, d.redelivered) for d in got] == [("a", False), ("a", True)]


def test_nack_drop_counts_dropped():
    """nack(requeue=False) discards the message and counts it as dropped."""
    _env, broker = make()
    got, cb = sink()
    c = broker.consume(["compute"], 1, cb, "c1")
    broker.publish("compute", "a")
    c.nack(got[0], requeue=False)
    stats = broker.queue_stats()["compute"]
    assert (stats["dropped"], stats["unacked"], stats["depth"]) == (1, 0, 0)


def test_delivery_latency_delays_on_delivery():
    """on_delivery runs after the drawn latency, at that virtual time."""
    delays = iter([0.25, 0.5])
    env, broker = make(latency=lambda: next(delays))
    seen = []
    broker.consume(["compute"], 2, lambda d: seen.append((d.body, env.now, d.delivered_at)), "c1")
    broker.publish("compute", "a")
    broker.publish("compute", "b")
    env.run()
    assert seen == [("a", 0.25, 0.25), ("b", 0.5, 0.5)]


def test_delivery_tags_unique_and_increasing():
    """Every delivery, redeliveries included, gets a fresh, larger tag."""
    _env, broker = make()
    got, cb = sink()
    c = broker.consume(["compute"], 1, cb, "c1")
    broker.publish("compute", "a")
    c.nack(got[0], requeue=True)
    c.release(got[0])
    broker.publish("compute", "b")
    c.ack(got[1])
    c.release(got[1])
    tags = [d.delivery_tag for d in got]
    assert tags == sorted(set(tags)) and len(tags) == 3


def test_synchronous_consumer_does_not_recurse():
    """A consumer that acks and releases inside on_delivery drains a long queue without recursion."""
    env, broker = make()
    for i in range(5000):
        broker.publish("compute", str(i))
    seen = []

    def handle(d):
        seen.append(d.body)
        c.ack(d)
        c.release(d)

    c = broker.consume(["compute"], 1, handle, "c1")
    env.run()
    assert len(seen) == 5000 and seen[-1] == "4999"


def test_stats_counts_peak_depth_and_waits():
    """Stats report counts, peak depth and queue waits from enqueue to delivery."""
    env, broker = make()
    for _ in range(3):
        broker.publish("compute", "x")
    env.run(until=2)
    got, cb = sink()
    c = broker.consume(["compute"], 1, cb, "c1")
    env.run(until=4)
    c.ack(got[0])
    c.release(got[0])
    s = broker.queue_stats()["compute"]
    assert {k: s[k] for k in ("published", "delivered", "acked", "depth", "unacked", "peak_depth")} == {
        "published": 3, "delivered": 2, "acked": 1, "depth": 1, "unacked": 1, "peak_depth": 3,
    }
    assert (s["wait_mean"], s["wait_p50"], s["wait_max"]) == (3.0, 3.0, 4.0)
    assert broker.queue_stats()["compute.host1"]["wait_mean"] is None


def test_redelivered_counted_in_stats():
    """Redeliveries after a crash show as requeued and redelivered."""
    _env, broker = make()
    _got, cb = sink()
    c1 = broker.consume(["compute"], 1, cb, "c1")
    broker.publish("compute", "a")
    c1.close()
    broker.consume(["compute"], 1, cb, "c2")
    s = broker.queue_stats()["compute"]
    assert (s["delivered"], s["requeued"], s["redelivered"], s["unacked"]) == (2, 1, 1, 1)


def test_deterministic_dispatch():
    """The same calls in the same order give the same deliveries."""

    def run():
        env, broker = make(latency=lambda: 0.01)
        log = []
        consumers = [
            broker.consume(["compute", f"compute.host{i}"], 2, lambda d: log.append((d.delivery_tag, d.body, d.consumer_tag, env.now)), f"h{i}")
            for i in (1, 2)
        ]
        for i in range(20):
            broker.publish("compute" if i % 3 else "compute.host2", str(i))
        env.run(until=0.015)
        consumers[0].close()
        env.run()
        return log

    assert run() == run()
