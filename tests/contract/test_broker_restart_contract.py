"""What a broker restart keeps: one test body against the sim broker model (sim/broker.py) and a RabbitMQ
node of the test's own (real/private_rabbit.py), killed with -9 and started again. Reliability A6: the sim
predicts the difference durable delivery makes because it loses what RabbitMQ loses, and keeps what it keeps."""

from __future__ import annotations

import pytest
import simpy

from sim.broker import Broker


class SimBackend:
    def __init__(self):
        self.env = simpy.Environment()
        self.broker = Broker(self.env)

    def declare(self, name, durable):
        self.broker.declare_queue(name, durable=durable)
        self.broker.bind(name, name)

    def publish(self, name, body, persistent):
        assert self.broker.publish(name, body, persistent=persistent)

    def kill_and_restart(self):
        self.broker.crash()
        self.broker.restart()

    def bodies(self, name):
        """The messages ``name`` holds, in order; None when the queue does not exist."""
        got = []
        try:
            self.broker.consume([name], 100, got.append, f"reader-{name}")
        except KeyError:
            return None
        self.env.run()
        return [d.body for d in got]


class RealBackend:
    def __init__(self, rabbit):
        import kombu

        from real.transport.wire import exchange, open_connection

        self.rabbit = rabbit
        self.kombu, self.exchange, self.open = kombu, exchange(durable=True), open_connection

    def _channel(self):
        conn = self.open(self.rabbit.url, 5.0, heartbeat=0, io_timeout=10.0)
        return conn, conn.channel()

    def declare(self, name, durable):
        conn, channel = self._channel()
        with conn:
            self.kombu.Queue(name, exchange=self.exchange, routing_key=name, durable=durable,
                             auto_delete=False)(channel).declare()

    def publish(self, name, body, persistent):
        import amqp

        conn, channel = self._channel()
        with conn:
            channel.confirm_select()
            channel.basic_publish_confirm(amqp.Message(body, delivery_mode=2 if persistent else 1), "nova", name,
                                          mandatory=True)

    def kill_and_restart(self):
        self.rabbit.kill()
        self.rabbit.restart()

    def bodies(self, name):
        import amqp

        conn, channel = self._channel()
        with conn:
            try:
                channel.queue_declare(name, passive=True)
            except amqp.exceptions.NotFound:
                return None
            out = []
            while (message := channel.basic_get(name, no_ack=True)) is not None:
                out.append(message.body.decode() if isinstance(message.body, bytes) else message.body)
            return out


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory):
    from conftest import service_unavailable

    from real.private_rabbit import PrivateRabbit, RabbitError, server_script

    if server_script() is None:
        service_unavailable("rabbitmq-server (to start a node of the test's own)", "not installed")
    node = PrivateRabbit(tmp_path_factory.mktemp("rabbit"))
    try:
        node.start()
    except RabbitError as e:
        service_unavailable("a private RabbitMQ node", str(e))
    yield node
    node.stop()


@pytest.fixture(params=["sim", "real"])
def backend(request):
    if request.param == "sim":
        return SimBackend()
    return RealBackend(request.getfixturevalue("rabbit"))


def test_a_restart_keeps_a_durable_queues_persistent_messages_and_nothing_else(backend):
    """Durable queue: persistent messages come back in order, transient ones are lost; a transient queue is gone."""
    backend.declare("d", durable=True)
    backend.declare("t", durable=False)
    for body, persistent in (("p1", True), ("t1", False), ("p2", True)):
        backend.publish("d", body, persistent)
    backend.publish("t", "p3", True)
    backend.kill_and_restart()
    assert backend.bodies("d") == ["p1", "p2"]
    assert backend.bodies("t") is None
