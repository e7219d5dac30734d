"""Simulated services: a worker consuming its topic queues, with heartbeats.

Each service consumes ``T`` and ``T.<host>`` through one broker consumer whose capacity
is the number of messages it handles at once. A delivery is decoded and dispatched to
the manager; poison messages are acked, answered with an error when a caller waits, and
counted once: never requeued. The ack comes before or after the method according to the
method's documented policy (common.rpc.ACK_POLICY).

A kill (sim/faults.py) closes the consumer, so the broker requeues what was delivered
and not acked, exactly as RabbitMQ does when a connection drops; a message acked on
receipt is lost with the work it started, as in 2010.

A broker outage cuts every consumer off while the services live on: work in flight
finishes (its ack has no connection to go to, so the message stays the broker's), and
each service reconnects as an RpcServer worker does, retrying with the transport's
backoff (``common.rpc.RECONNECT_BACKOFF_*``) until the broker answers, then declaring its
queues again (a restart removed transient ones) and consuming.
"""

from __future__ import annotations

from common import rpc, service
from common.errors import NovaError, PoisonMessage
from sim.broker import BrokerDown
from sim.runtime import ServiceKilled

#: Start-up attempts of a restarted service before it stays down (its supervisor's limit).
MAX_START_ATTEMPTS = 30


class SimService:
    """One service (a topic on a host) and its current incarnation: the agent that
    performs its effects and the broker consumer that feeds it. ``kill`` and ``restart``
    are the fault plan's SIGKILL and start-up."""

    def __init__(self, runtime, topic: str, host: str, manager, capacity: int, hypervisor=None, netdriver=None,
                 beat=None):
        """``beat``: makes one heartbeat's work (default: ``service.report_state``;
        a run gives ``common.assembly.heartbeat``, which also watches the store)."""
        self.runtime = runtime
        self.topic = topic
        self.host = host
        self.manager = manager
        self.beat = beat or (lambda: service.report_state(topic, host))
        self.capacity = capacity
        self.hypervisor = hypervisor
        self.netdriver = netdriver
        self.incarnation = 0
        self.poison = 0
        self.agent = runtime.agent(rpc.host_topic(topic, host), host, hypervisor, netdriver)
        self.consumer = self._consume()

    @property
    def queues(self) -> list[str]:
        return [self.topic, rpc.host_topic(self.topic, self.host)]

    @property
    def alive(self) -> bool:
        return self.agent.alive

    def _consume(self):
        """Declare and bind both queues, then consume them (what a worker does on each
        connect). Raises BrokerDown while the broker is away."""
        agent, broker = self.agent, self.runtime.broker
        for queue in self.queues:
            broker.declare_queue(queue, durable=self.runtime.durable)
            broker.bind(queue, queue)
        made = []  # the consumer, once consume() returns (a delivery's process starts later)

        def on_delivery(delivery):
            self.runtime.env.process(self._handle(delivery, agent, made[0]))

        made.append(broker.consume(self.queues, self.capacity, on_delivery, tag=agent.name))
        return made[0]

    def reconnect(self):
        """SimPy process, started when the broker cut this incarnation off: retry with the
        transport's backoff until the broker answers, then consume again."""
        env, agent = self.runtime.env, self.agent
        delay = rpc.RECONNECT_BACKOFF_MIN
        while True:  # bounded by the outage: the broker always comes back in a fault plan
            yield env.timeout(delay)
            if not agent.alive or agent is not self.agent:
                return  # killed meanwhile: a restart connects on its own
            try:
                self.consumer = self._consume()
                return
            except BrokerDown:
                delay = min(delay * 2, rpc.RECONNECT_BACKOFF_MAX)

    def kill(self) -> None:
        """SIGKILL: the consumer's connection drops (unacked deliveries, in flight too,
        go back to their queues), heartbeats and periodic tasks stop, and work in flight
        stops at its next effect. The hypervisor's domains live on, as libvirt's do."""
        self.agent.alive = False
        self.agent.watched = True
        self.consumer.close()

    def crash_after(self, effects: int, on_crash) -> None:
        """Arm a crash point: once this incarnation has performed ``effects`` more
        effects, it is killed before it sees the last one's result; then ``on_crash()``."""
        agent = self.agent
        agent.watched = True
        agent.crash_after = agent.performed + effects

        def crash():
            self.kill()
            on_crash()

        agent.on_crash = crash

    def restart(self, start_up, report_interval: float, periodic_tasks=()):
        """SimPy process: a new incarnation runs ``start_up(service)`` (a generator of
        effects, e.g. the compute reconciliation), reports its state, starts consuming,
        then beats and runs ``periodic_tasks`` ((interval, make_work) pairs)."""
        if self.alive:
            raise RuntimeError(f"{self.agent.name} is running; kill it before restarting")
        self.incarnation += 1
        self.agent = self.runtime.agent(rpc.host_topic(self.topic, self.host), self.host, self.hypervisor,
                                        self.netdriver, incarnation=self.incarnation)
        for _ in range(MAX_START_ATTEMPTS):
            try:
                yield from self.runtime.drive(self.agent, start_up(self))
                yield from self.runtime.drive(self.agent, service.report_state(self.topic, self.host))
                self.consumer = self._consume()
                break
            except ServiceKilled:
                return
            except (NovaError, BrokerDown):
                # The daemon exits when start-up fails (the store or the broker is down)
                # and its supervisor starts it again a report interval later.
                yield self.runtime.env.timeout(report_interval)
        else:
            return  # gave up: stays down, which the invariants will show
        self.start_background(report_interval, report_interval, periodic_tasks)

    def start_background(self, report_interval: float, first_beat: float, periodic_tasks=()):
        """Start this incarnation's heartbeat (first after ``first_beat``) and periodic tasks."""
        env = self.runtime.env
        env.process(self.heartbeat(report_interval, first_beat))
        for interval, make_work in periodic_tasks:
            env.process(periodic(self.runtime, self.agent, interval, make_work))

    def _handle(self, delivery, agent, consumer):
        runtime = self.runtime
        if consumer.closed:
            return  # killed before the work began: the broker has requeued the delivery
        method, msg_id = "?", None
        try:
            message = rpc.decode(delivery.body)
            method, msg_id = message.get("method", "?"), message.get("_msg_id")
            work, msg_id = rpc.dispatch(self.manager, message)
        except Exception as e:  # any failure to decode or validate: poison, never a dead worker
            if not isinstance(e, PoisonMessage):
                e = PoisonMessage(f"{type(e).__name__}: {e}")
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
            result = yield from runtime.drive(agent, work)
        except NovaError as e:
            failure = e
        except ServiceKilled:
            runtime.recorder.rpc_handled(delivery, method, msg_id, runtime.env.now, "killed")
            return
        if not ack_first and not consumer.closed:  # closed: the broker has the message back
            consumer.ack(delivery)
        consumer.release(delivery)
        if msg_id:
            runtime.reply(msg_id, rpc.reply(result, failure))
        outcome = "ok" if failure is None else f"{type(failure).__name__}: {failure}"
        runtime.recorder.rpc_handled(delivery, method, msg_id, runtime.env.now, outcome)

    def heartbeat(self, interval: float, offset: float):
        """SimPy process: report_state every ``interval``, first after ``offset``, until killed."""
        env, agent = self.runtime.env, self.agent
        yield env.timeout(offset)
        while agent.alive:
            try:
                yield from self.runtime.drive(agent, self.beat())
            except ServiceKilled:
                return
            except NovaError:
                pass  # e.g. the store is down: this beat is lost, the next one tries again
            yield env.timeout(interval)


def periodic(runtime, agent, interval: float, make_work):
    """SimPy process: run ``make_work()`` every ``interval`` seconds until ``agent`` is killed."""
    env = runtime.env
    while agent.alive:
        yield env.timeout(interval)
        try:
            yield from runtime.drive(agent, make_work())
        except ServiceKilled:
            return
        except NovaError:
            pass  # e.g. the store is down: the next period tries again
