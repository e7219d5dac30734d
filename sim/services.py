"""Simulated services: a worker consuming its topic queues, with heartbeats.

Each service consumes ``T`` and ``T.<host>`` through one broker consumer whose capacity
is the number of messages it handles at once. A delivery is decoded and dispatched to
the manager; poison messages are acked, answered with an error when a caller waits, and
counted once: never requeued. The ack comes before or after the method according to the
method's documented policy (common.rpc.ACK_POLICY).
"""

from __future__ import annotations

from common import rpc, service
from common.errors import NovaError, PoisonMessage


class SimService:
    def __init__(self, runtime, topic: str, host: str, manager, capacity: int, hypervisor=None, netdriver=None):
        self.runtime = runtime
        self.topic = topic
        self.host = host
        self.manager = manager
        self.agent = runtime.agent(rpc.host_topic(topic, host), host, hypervisor, netdriver)
        broker = runtime.broker
        queues = [topic, rpc.host_topic(topic, host)]
        for queue in queues:
            broker.declare_queue(queue)
            broker.bind(queue, queue)
        self.consumer = broker.consume(queues, capacity, self._on_delivery, tag=self.agent.name)
        self.poison = 0

    def _on_delivery(self, delivery):
        self.runtime.env.process(self._handle(delivery))

    def _handle(self, delivery):
        runtime, consumer = self.runtime, self.consumer
        method, msg_id = "?", None
        try:
            message = rpc.decode(delivery.body)
            method, msg_id = message.get("method", "?"), message.get("_msg_id")
            work, msg_id = rpc.dispatch(self.manager, message)
        except PoisonMessage as e:
            self.poison += 1
            consumer.ack(delivery)
            consumer.release(delivery)
            if msg_id:
                runtime.reply(msg_id, rpc.reply(failure=e))
            runtime.recorder.rpc_handled(delivery, method, msg_id, runtime.env.now, f"poison: {e}")
            return
        ack_first = rpc.ack_policy(method) is rpc.AckPolicy.ON_RECEIPT
        if ack_first:
            consumer.ack(delivery)
        result = failure = None
        try:
            result = yield from runtime.drive(self.agent, work)
        except NovaError as e:
            failure = e
        if not ack_first:
            consumer.ack(delivery)
        consumer.release(delivery)
        if msg_id:
            runtime.reply(msg_id, rpc.reply(result, failure))
        outcome = "ok" if failure is None else f"{type(failure).__name__}: {failure}"
        runtime.recorder.rpc_handled(delivery, method, msg_id, runtime.env.now, outcome)

    def heartbeat(self, interval: float, offset: float):
        """SimPy process: report_state every ``interval``, first after ``offset``."""
        env = self.runtime.env
        yield env.timeout(offset)
        while True:
            yield from self.runtime.drive(self.agent, service.report_state(self.topic, self.host))
            yield env.timeout(interval)


def periodic(runtime, agent, interval: float, make_work):
    """SimPy process: run ``make_work()`` every ``interval`` seconds, forever."""
    env = runtime.env
    while True:
        yield env.timeout(interval)
        yield from runtime.drive(agent, make_work())
