"""The sim runner: performs effects as SimPy events.

Theory of operation
-------------------
``drive(agent, gen)`` is a SimPy process body. It resumes the manager generator, takes
the effect it yields, performs it against the run's models (fakeredis, broker, fake
hypervisor), waits the latency drawn for it from the scenario's seeded distributions,
and sends the result back (or throws the manager-level error in at the ``yield``).
Every effect is thus a scheduling point where other processes can run, which is where
races show up. A latency of zero skips the scheduling point when the scenario allows
it (``timing.inline_zero_latency``), trading fidelity for speed.

An *agent* is who runs the generator: a service on a host, with its hypervisor (for
compute) and its own random stream. Every stream is derived from the run seed and the
stream's name, so adding a component does not shift another's draws.

Every effect is folded into the trace fingerprint (``sim.trace``) with the virtual time
and the agent: the same scenario, seed and commit give the same fingerprint.

A generator that yields another generator forgot ``yield from``; the runner throws
UseYieldFrom into it rather than silently doing nothing.

A killed service (the fault plan) is an agent whose ``alive`` flag went down; a crash
point kills it once it has performed a given number of effects. Its generators stop
at their next scheduling point: the effect in progress completes (a
store command that reached Redis stays done), the manager never sees its result, and
no ``finally:`` of the manager runs (a crash is not an exception): the generator is
kept, unclosed, in ``dropped``. ``drive`` raises ServiceKilled to the SimPy process
that drove it, which ends quietly.

Who performs what is a registration table (``common.performers.PerformerTable``), one
entry per effect family, shared in shape with the real runner: the store (SimStore,
with the scenario's store latency waited after each command), RPC and the runtime's own
effects (this class), each agent's own fake hypervisor and fake network driver
(``AgentsOwn``); ``sim.directory`` and ``sim.images`` register theirs. A mixed run is
assembled by registering other performers for some families (see ``register``).
"""

from __future__ import annotations

import random
import types
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from common import rpc
from common.distributions import Constant
from common.effects import Call, Cast, HypervisorEffect, NetDriverEffect, RpcEffect, RuntimeEffect, StoreEffect
from common.errors import (
    HypervisorError,
    NetworkDriverError,
    NovaError,
    RemoteError,
    RpcTimeout,
    Unroutable,
    UseYieldFrom,
)
from common.performers import AgentsOwn, HypervisorPerformer, Latency, NetDriverPerformer, PerformerTable
from sim.broker import BrokerDown
from sim.trace import TRACE_BATCH, Trace

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def stream(seed: int, name: str) -> random.Random:
    """An independent, reproducible random stream for one component."""
    return random.Random(f"{seed}/{name}")


class FixedLatency:
    """A latency that is always ``delay`` seconds: ``drive`` waits it without a draw."""

    __slots__ = ("delay",)

    def __init__(self, delay: float):
        self.delay = delay

    def __call__(self) -> float:
        return self.delay


def latency_of(distribution, rng: random.Random) -> Latency:
    """A latency drawing from ``distribution`` with ``rng``; fixed for a constant one
    (which draws nothing from ``rng``)."""
    if isinstance(distribution, Constant):
        return FixedLatency(distribution.value)
    return partial(distribution.sample, rng)


class ServiceKilled(Exception):
    """The agent driving a generator was killed; its process should end quietly."""


@dataclass
class Agent:
    """Who performs effects: a service on a host (one incarnation of it)."""

    name: str
    host: str = ""
    hypervisor: HypervisorPerformer | None = None
    rng: random.Random = field(default=None, repr=False)  # type: ignore[assignment]  # agent() always gives one
    netdriver: NetDriverPerformer | None = None
    #: False once the service is killed: its generators stop at their next effect.
    alive: bool = True
    #: True when ``drive`` must look at this agent between effects (killed, or armed
    #: with a crash point); False keeps the common path to one attribute test.
    watched: bool = False
    #: Effects performed since the agent was armed (counted only while watched).
    performed: int = 0
    #: Crash point: once ``performed`` reaches it, ``on_crash()`` kills the service.
    crash_after: int | None = None
    on_crash: Any = field(default=None, repr=False)


class SimRuntime:
    def __init__(self, env, seed: int, store, broker, timing, recorder, durable: bool = True):
        self.env = env
        self.seed = seed
        self.store = store
        self.broker = broker
        #: cloud.durable_delivery: services declare durable queues and casts are persistent.
        self.durable = durable
        self.recorder = recorder
        self.inline = timing.inline_zero_latency
        self._store_rng = stream(seed, "latency/store")
        self._rpc_rng = stream(seed, "latency/rpc")
        self._ids_rng = stream(seed, "ids")
        self._store_latency = timing.store
        self._rpc_latency = timing.rpc
        self._issued_ids: set[str] = set()
        self._calls: dict[str, Any] = {}  # msg_id -> the SimPy event its caller waits on
        self._call_counter = 0
        self.trace = Trace()
        #: Effect class -> what ``drive`` does with it (see ``_plan``); cleared on register.
        self._plans: dict[type, tuple] = {}
        self.late_replies = 0
        #: Generators of killed agents, kept unclosed so that no ``finally:`` runs.
        self.dropped: list[types.GeneratorType] = []
        self.performers = PerformerTable()
        self.register(StoreEffect, store, latency=latency_of(self._store_latency, self._store_rng))
        self.register(RpcEffect, self)
        self.register(HypervisorEffect, AgentsOwn("hypervisor", HypervisorError, "hypervisor"))
        self.register(NetDriverEffect, AgentsOwn("netdriver", NetworkDriverError, "network driver"))
        self.register(RuntimeEffect, self)

    def register(self, family_or_type: type, performer, latency: Latency = None) -> None:
        """Perform a family (``common.effects.FAMILIES``) with ``performer``, which
        satisfies the family's Protocol (``common.performers``), or with ``AgentsOwn``
        (each agent's own: hypervisors, network drivers); or one effect class with a
        function ``(agent, effect)``. A performer returns the result, or a SimPy
        generator returning it; ``latency()`` seconds are waited after each effect.
        How sim/ components plug in (directory, image cache), and how a mixed run would
        be assembled: register ``real.store.RedisStore`` for StoreEffect (a blocking
        call inside a SimPy process is correct, it only costs wall time) and keep
        ``AgentsOwn`` fakes for hundreds of simulated compute hosts. Real RPC in a
        simulation needs a performer that turns a transport's replies into SimPy
        events (an environment running at wall-clock pace, ``simpy.rt``); the table
        does not change for it."""
        self.performers.register(family_or_type, performer, latency)
        self._plans.clear()

    @property
    def fingerprint(self) -> str:
        return self.trace.fingerprint

    @property
    def effects(self) -> int:
        """Effects performed so far."""
        return self.trace.effects

    def agent(self, name: str, host: str = "", hypervisor=None, netdriver=None, incarnation: int = 0) -> Agent:
        """A performer of effects; a restarted service is a new ``incarnation`` with a
        random stream of its own."""
        rng_name = f"agent/{name}" if incarnation == 0 else f"agent/{name}#{incarnation}"
        return Agent(name, host, hypervisor, stream(self.seed, rng_name), netdriver)

    def start(self, agent: Agent, gen):
        """Run a manager generator as its own SimPy process (which ends quietly, with
        None, when the agent is killed)."""
        return self.env.process(self._drive_quietly(agent, gen))

    def _drive_quietly(self, agent, gen):
        try:
            return (yield from self.drive(agent, gen))
        except ServiceKilled:
            return None

    def rpc_latency(self) -> float:
        return self._rpc_latency.sample(self._rpc_rng)

    # -- the loop -----------------------------------------------------------------

    def drive(self, agent: Agent, gen):
        env = self.env
        plans = self._plans
        generator = types.GeneratorType
        trace = self.trace
        lines, stamp = trace.lines, trace.stamps.append
        full = 2 * TRACE_BATCH  # lines: two per effect
        name = agent.name
        send: Any = None
        throw: BaseException | None = None
        while True:
            if agent.watched and self._stopped(agent):
                self.dropped.append(gen)
                raise ServiceKilled(agent.name)
            try:
                effect = gen.send(send) if throw is None else gen.throw(throw)
            except StopIteration as stop:
                return stop.value
            send = throw = None
            if agent.watched:
                agent.performed += 1
            kind = type(effect)
            handler, describe, delay, latency = plans.get(kind) or self._plan(agent, kind)
            stamp(env.now)
            lines.append(name)
            lines.append(describe(effect))
            if len(lines) >= full:
                trace.fold()
            if handler is None:
                throw = UseYieldFrom(f"{name} yielded a generator ({effect.__qualname__}); use 'yield from' to call it")
                continue
            try:
                send = handler(agent, effect)
                if type(send) is generator:
                    send = yield from send
            except (NovaError, ValueError) as e:  # e.g. StoreUnavailable during an outage
                send, throw = None, e
            if delay is not None:
                yield env.timeout(delay)
            elif latency is not None:
                wait = latency()
                if wait > 0 or not self.inline:
                    yield env.timeout(wait)

    def _plan(self, agent: Agent, kind: type) -> tuple:
        """-> (handler, describer, fixed delay or None, latency or None) for effects of
        class ``kind``, made once: the registered performer's handler, the trace text,
        and the wait after each effect (a fixed one needs no draw; none at all when it
        is zero and the scenario inlines zero latencies)."""
        if kind is types.GeneratorType:  # a forgotten 'yield from': thrown back in
            return None, lambda gen: f"generator {gen.__qualname__}", None, None
        entry = self.performers.lookup(kind)
        if entry is None:
            raise TypeError(f"{agent.name} yielded a {kind.__qualname__}, which is not an effect with a "
                            "registered performer")
        handler, latency = entry
        delay = None
        if isinstance(latency, FixedLatency):
            delay, latency = latency.delay, None
            if delay == 0 and self.inline:
                delay = None
        plan = self._plans[kind] = (handler, self.trace.describer(kind), delay, latency)
        return plan

    @staticmethod
    def _stopped(agent: Agent) -> bool:
        """Is ``agent`` dead? Fires its crash point first when it has been reached."""
        if agent.alive and agent.crash_after is not None and agent.performed >= agent.crash_after:
            agent.crash_after = None
            agent.on_crash()
        return not agent.alive

    # -- RpcPerformer: the broker model -----------------------------------------

    def _publish(self, topic: str, body: str, what: str, call: bool) -> None:
        """Publish as RpcClient does: Unroutable when nothing is bound to ``topic`` or the
        broker cannot be reached (a refused connection fails at once)."""
        try:
            routed = self.broker.publish(topic, body, rpc.persistent(self.durable, call))
        except BrokerDown:
            raise Unroutable(f"cannot reach the broker: it is down ({what} to {topic!r})") from None
        if not routed:
            raise Unroutable(f"no queue is bound to topic {topic!r} ({what})")

    def cast(self, agent, cast: Cast):
        body = rpc.encode(rpc.envelope(cast.method, cast.args, cast.context))
        self._publish(cast.topic, body, f"cast {cast.method}", call=False)
        self.recorder.rpc_published(cast.topic, cast.method, None, self.env.now, agent.name)
        yield from self._hop()

    def call(self, agent, call: Call):
        self._call_counter += 1
        msg_id = f"{self._call_counter:012x}"
        body = rpc.encode(rpc.envelope(call.method, call.args, call.context, msg_id=msg_id))
        self._publish(call.topic, body, f"call {call.method}", call=True)
        self.recorder.rpc_published(call.topic, call.method, msg_id, self.env.now, agent.name)
        waiter = self.env.event()
        self._calls[msg_id] = waiter
        timer = self.env.timeout(call.timeout)
        yield waiter | timer
        if not waiter.triggered:
            del self._calls[msg_id]
            self.recorder.rpc_timed_out(msg_id, self.env.now)
            raise RpcTimeout(f"no reply from {call.topic!r} to {call.method} within {call.timeout:g} s")
        reply = waiter.value
        if reply is None:  # connections_lost()
            self.recorder.rpc_timed_out(msg_id, self.env.now)
            raise RpcTimeout(f"connection to the broker lost while waiting for the reply from {call.topic!r} to "
                             f"{call.method}; the callee may or may not have run")
        if reply["failure"] is not None:
            raise RemoteError(*reply["failure"])
        return reply["result"]

    def reply(self, msg_id: str, reply: dict):
        """A callee answers: the reply reaches the caller one broker hop later, or is
        dropped (and counted) when the caller stopped waiting."""

        if self.broker.down:  # the callee's connection is gone, and the reply with it
            self.late_replies += 1
            return

        def arrive(_=None):
            waiter = self._calls.pop(msg_id, None)
            if waiter is None:
                self.late_replies += 1
            else:
                waiter.succeed(reply)

        delay = self.rpc_latency()
        if delay > 0:
            self.env.timeout(delay).callbacks.append(arrive)
        else:
            arrive()

    def connections_lost(self) -> None:
        """The broker died: every call waiting for a reply fails now, as RpcClient.call
        raises when its connection drops (its direct reply-to address died with it)."""
        calls, self._calls = self._calls, {}
        for waiter in calls.values():
            waiter.succeed(None)

    def _hop(self):
        delay = self.rpc_latency()
        if delay > 0 or not self.inline:
            yield self.env.timeout(delay)

    # -- RuntimePerformer: time, ids, randomness, records --------------------------

    def now(self) -> float:
        return float(self.env.now)  # SimPy's clock stays an int until a fractional delay

    def now_handler(self, agent, effect) -> float:
        """``Now``'s handler in ``drive`` (``Now.bind``): ``now()`` in one call."""
        return float(self.env.now)

    def sleep(self, seconds: float):
        yield self.env.timeout(seconds)

    def new_id(self, prefix: str) -> str:
        rng = self._ids_rng
        while True:
            candidate = f"{prefix}-" + "".join(rng.choice(_ID_ALPHABET) for _ in range(8))
            if candidate not in self._issued_ids:
                self._issued_ids.add(candidate)
                return candidate

    def choose(self, agent, options: tuple | range):
        if not options:
            raise ValueError("Choose needs at least one option")
        return options[int(agent.rng.random() * len(options))]

    def record(self, event) -> None:
        self.recorder.observe(event, self.env.now)
