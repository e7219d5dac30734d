"""real/transport against RabbitMQ: RpcClient and RpcServer end to end."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from typing import Any, ClassVar

import pytest

if not os.environ.get("CI"):  # in CI a missing kombu must fail loudly, not skip
    pytest.importorskip("kombu")

from common import rpc
from common.errors import NoValidHost, PoisonMessage, RemoteError, RpcTimeout, Unroutable
from real.transport import RpcClient, RpcServer, delete_queues, queue_depths, queue_stats


class Manager:
    """A tiny manager: its methods are generators that yield no effects."""

    rpc_methods: ClassVar = {"echo", "fail", "crash", "sleep", "whoami", "block", "run_instance", "terminate_instance"}

    def __init__(self, host="h1"):
        self.host = host
        self.seen = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def echo(self, context, value: Any = None):
        self.seen.append(value)
        return value
        yield

    def fail(self, context):
        raise NoValidHost("no host has room")
        yield

    def crash(self, context):
        raise ValueError("a bug")
        yield

    def sleep(self, context, seconds: float):
        time.sleep(seconds)
        return "slept"
        yield

    def whoami(self, context):
        return self.host
        yield

    def block(self, context):
        """Blocks the first time until the test releases it; counts every delivery."""
        self.seen.append("block")
        if len(self.seen) == 1:
            self.entered.set()
            self.release.wait(10)
        return None
        yield

    run_instance = block  # acked on receipt
    terminate_instance = block  # acked on completion


def handle_for(manager):
    """What a runner supplies: dispatch, then drive the generator (no effects here)."""

    def handle(message):
        work, _ = rpc.dispatch(manager, message)
        try:
            next(work)
        except StopIteration as done:
            return done.value
        raise AssertionError("test managers yield no effects")

    return handle


def eventually(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def topic():
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def serve(amqp_url, topic):
    servers, queues = [], set()

    def start(host="h1", manager=None, **kwargs):
        manager = manager or Manager(host)
        server = RpcServer(amqp_url, topic, host, handle_for(manager), **kwargs).start()
        servers.append(server)
        queues.update(server.queues)
        return server, manager

    yield start
    for server in servers:
        server.stop()
    delete_queues(amqp_url, sorted(queues))


@pytest.fixture
def client(amqp_url):
    with RpcClient(amqp_url) as c:
        yield c


def raw_call(url, topic, body: bytes, timeout=5.0):
    """Publish raw bytes as a call (reply_to + correlation_id) and return the decoded reply."""
    import amqp
    import kombu

    with kombu.Connection(url) as conn:
        channel, got = conn.channel(), list[Any]()
        channel.basic_consume("amq.rabbitmq.reply-to", no_ack=True, callback=got.append)
        channel.basic_publish(amqp.Message(body, reply_to="amq.rabbitmq.reply-to", correlation_id="raw-1"),
                              exchange="nova", routing_key=topic)
        deadline = time.monotonic() + timeout
        while not got and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=0.1)
            except TimeoutError:
                pass
        assert got, "no reply to the raw call"
        assert got[0].properties["correlation_id"] == "raw-1"
        return json.loads(got[0].body)


def test_cast_reaches_handler(serve, client, topic):
    """A cast is delivered to the handler with its arguments."""
    _server, manager = serve()
    client.cast(topic, "echo", {"value": 7})
    assert eventually(lambda: manager.seen == [7])


def test_call_returns_result(serve, client, topic):
    """A call returns the handler's return value."""
    serve()
    assert client.call(topic, "echo", {"value": {"a": [1, 2]}}) == {"a": [1, 2]}


def test_remote_failure_raises_remote_error(serve, client, topic):
    """A NovaError in the handler comes back as RemoteError(exc_type, value)."""
    serve()
    with pytest.raises(RemoteError) as e:
        client.call(topic, "fail", {})
    assert (e.value.exc_type, e.value.value) == ("NoValidHost", "no host has room")


def test_unexpected_exception_replied_and_server_keeps_serving(serve, client, topic):
    """A bug in a handler is answered as RemoteError, counted, and the worker serves on."""
    server, _ = serve(workers=1)
    with pytest.raises(RemoteError, match="ValueError: a bug"):
        client.call(topic, "crash", {})
    assert server.errors == 1
    assert client.call(topic, "echo", {"value": 1}) == 1


def test_unroutable_cast_and_call(client):
    """Casting or calling a topic no queue is bound to raises Unroutable at once."""
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"
    with pytest.raises(Unroutable, match=nobody):
        client.cast(nobody, "echo", {})
    with pytest.raises(Unroutable, match=nobody):
        client.call(nobody, "echo", {}, timeout=5)


def test_call_times_out_without_consumer(serve, client, topic, amqp_url):
    """With queues bound but no server consuming, a call raises RpcTimeout within timeout + 1 s."""
    server, _ = serve()
    server.stop()
    start = time.monotonic()
    with pytest.raises(RpcTimeout, match=re.escape("within 0.5 s")):
        client.call(topic, "echo", {}, timeout=0.5)
    assert time.monotonic() - start < 1.5
    assert queue_depths(amqp_url, [topic, f"{topic}.h1"]) == {topic: 1, f"{topic}.h1": 0}


def test_late_reply_dropped_and_counted(serve, client, topic):
    """A reply arriving after its call timed out is dropped and counted in late_replies."""
    serve(workers=1)
    with pytest.raises(RpcTimeout):
        client.call(topic, "sleep", {"seconds": 0.5}, timeout=0.1)
    assert client.call(topic, "echo", {"value": "next"}) == "next"
    assert client.late_replies == 1


POISON = {
    "not-json": b"{not json",
    "invalid-utf8": b'{"method": "echo\xff", "args": {}}',
    "no-method": json.dumps({"args": {}, "_msg_id": "raw-1"}).encode(),
    "unknown-method": json.dumps({"method": "format_disk", "args": {}, "_msg_id": "raw-1"}).encode(),
    "bad-args": json.dumps({"method": "echo", "args": {"nope": 1}, "_msg_id": "raw-1"}).encode(),
    "wrong-type": json.dumps({"method": "sleep", "args": {"seconds": "long"}, "_msg_id": "raw-1"}).encode(),
    "nested": rpc.poison_body("nested", "compute"),
    "huge": rpc.poison_body("huge", "compute"),
}


@pytest.mark.parametrize("kind", sorted(POISON))
def test_poison_message_answered_acked_once_and_server_serves_on(kind, serve, client, topic, amqp_url):
    """Each poison kind gets a PoisonMessage error reply, is counted once, never requeued."""
    server, _ = serve(workers=1)
    reply = raw_call(amqp_url, topic, POISON[kind])
    assert reply["result"] is None and reply["failure"][0] == "PoisonMessage"
    assert client.call(topic, "echo", {"value": "ok"}) == "ok"
    assert server.poison == 1
    server.stop()
    assert queue_depths(amqp_url, [topic]) == {topic: 0}


def test_nested_poison_on_the_shared_topic_leaves_every_worker_serving(serve, client, topic, amqp_url):
    """Reliability A14: one deep-nesting body per worker on the shared topic; all of them keep consuming."""
    server, _ = serve(workers=3)
    for _ in range(6):
        raw_call(amqp_url, topic, rpc.poison_body("nested", "compute"))
    assert server.poison == 6 and server.restarts == 0 and server.ready == 3
    assert [client.call(topic, "whoami", {}) for _ in range(6)] == ["h1"] * 6


class Fatal(BaseException):
    """What no handler should raise; stands for whatever might still kill a worker thread."""


def test_a_worker_that_dies_is_replaced(serve, client, topic):
    """A worker thread killed by an unexpected BaseException is replaced and the server serves on."""
    manager = Manager()
    calls = []

    def dies_once(message):
        calls.append(message["method"])
        if len(calls) == 1:
            raise Fatal("out of the blue")
        return handle_for(manager)(message)

    server = RpcServer(client.url, topic, "h1", dies_once, workers=1).start()
    try:
        client.cast(topic, "echo", {"value": 1})
        assert client.call(topic, "echo", {"value": 2}) == 2
        assert server.restarts == 1 and not server.failed.is_set()
    finally:
        server.stop()
        delete_queues(client.url, server.queues)


def test_a_server_whose_workers_keep_dying_gives_up_and_says_so(client, topic):
    """Past max_restarts the server sets failed and calls on_failed once: its owner stops heartbeating."""
    reasons = []

    def always_dies(message):
        raise Fatal("every time")

    server = RpcServer(client.url, topic, "h1", always_dies, workers=1, max_restarts=2,
                       on_failed=reasons.append).start()
    try:
        for _ in range(3):
            client.cast(topic, "echo", {}, wait=True)
        assert server.failed.wait(10)
        assert len(reasons) == 1 and "worker threads died" in reasons[0]
    finally:
        server.stop()
        delete_queues(client.url, server.queues)


def test_unserialisable_args_rejected_before_publishing(serve, client, topic):
    """Arguments JSON cannot carry raise PoisonMessage in the caller; nothing is sent."""
    server, _ = serve()
    with pytest.raises(PoisonMessage):
        client.cast(topic, "echo", {"value": object()})
    assert server.served == 0


def test_two_servers_compete_on_the_shared_topic(serve, client, topic):
    """Two servers of one topic both get a share of its calls."""
    serve("a", workers=1)
    serve("b", workers=1)
    assert {client.call(topic, "whoami", {}) for _ in range(20)} == {"a", "b"}


def test_host_topic_reaches_only_that_host(serve, client, topic):
    """Calls to topic.<host> are served by that host only."""
    serve("a", workers=1)
    serve("b", workers=1)
    assert {client.call(f"{topic}.b", "whoami", {}) for _ in range(10)} == {"b"}


def test_server_survives_connection_drop(serve, client, topic):
    """After every worker's connection is cut, the server reconnects and serves again."""
    server, _ = serve(workers=2)
    for worker in server.workers:
        worker.raw.sock.shutdown(socket.SHUT_RDWR)
    assert client.call(topic, "echo", {"value": "back"}, timeout=10) == "back"
    assert eventually(lambda: server.reconnects >= 2 and server.ready == 2)


@pytest.mark.parametrize("method, deliveries", [("run_instance", 1), ("terminate_instance", 2)])
def test_ack_policy_decides_redelivery_after_a_crash(method, deliveries, serve, client, topic):
    """A connection lost mid-handler redelivers ON_COMPLETION methods, not ON_RECEIPT ones."""
    server, manager = serve(workers=1)
    client.cast(topic, method, {})
    assert manager.entered.wait(5)
    server.workers[0].raw.sock.shutdown(socket.SHUT_RDWR)
    manager.release.set()
    assert client.call(topic, "echo", {"value": "after"}, timeout=10) == "after"
    assert manager.seen == ["block"] * deliveries + ["after"]


def test_batched_casts_report_unroutable_at_flush(serve, client, topic):
    """cast(wait=False) delivers routable casts; flush() names the unroutable ones."""
    _server, manager = serve()
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"
    for i in range(20):
        client.cast(topic, "echo", {"value": i}, wait=False)
    client.cast(nobody, "echo", {}, wait=False)
    with pytest.raises(Unroutable, match=nobody):
        client.flush()
    assert eventually(lambda: sorted(manager.seen) == list(range(20)))


def test_client_refuses_a_second_thread(client, serve, topic):
    """An RpcClient used from another thread raises instead of corrupting its connection."""
    serve()
    client.call(topic, "echo", {})
    errors = []

    def cast_from_another_thread():
        with pytest.raises(RuntimeError):
            client.cast(topic, "echo", {})
        errors.append("refused")

    t = threading.Thread(target=cast_from_another_thread)
    t.start()
    t.join()
    assert errors


def test_stop_is_clean(serve, topic, amqp_url):
    """stop() ends every worker thread and leaves no consumer on the queues."""
    server, _ = serve()
    assert server.stop(timeout=5) is True
    assert not any(w.is_alive() for w in server.workers)
    assert queue_stats(amqp_url, server.queues) == {q: {"messages": 0, "consumers": 0} for q in server.queues}


def test_queues_deleted_under_a_running_server_are_declared_again(serve, client, topic, amqp_url):
    """When its queues vanish (as after a broker restart) the server re-declares them and serves."""
    server, _ = serve(workers=2)
    delete_queues(amqp_url, server.queues)
    assert eventually(lambda: server.reconnects >= 2 and server.ready == 2)
    assert client.call(topic, "echo", {"value": "again"}, timeout=5) == "again"


def test_long_handler_keeps_its_connection(serve, client, topic):
    """A handler running longer than two heartbeat intervals keeps its connection and replies."""
    server, _ = serve(workers=1, heartbeat=1)
    assert client.call(topic, "sleep", {"seconds": 3.0}, timeout=10) == "slept"
    assert server.reconnects == 0


def test_unreachable_broker_is_a_clear_error():
    """With no broker at the address, a cast raises Unroutable and a server start fails, both naming it."""
    url = "amqp://guest:guest@127.0.0.1:1//"
    with RpcClient(url, connect_timeout=1) as c, pytest.raises(Unroutable, match="cannot reach the broker at amqp://"):
        c.cast("compute", "echo", {})
    server = RpcServer(url, "compute", "h1", lambda m: None, workers=1, connect_timeout=1)
    with pytest.raises(ConnectionError, match=re.escape("not consuming after 0.5 s")):
        server.start(timeout=0.5)
