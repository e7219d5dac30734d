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

Every effect is folded into the trace fingerprint with the virtual time and the agent:
the same scenario, seed and commit give the same fingerprint.

A generator that yields another generator forgot ``yield from``; the runner throws
UseYieldFrom into it rather than silently doing nothing.

A killed service (the fault plan) is an agent whose ``alive`` flag went down; a crash
point kills it once it has performed a given number of effects. Its generators stop
at their next scheduling point: the effect in progress completes (a
store command that reached Redis stays done), the manager never sees its result, and
no ``finally:`` of the manager runs (a crash is not an exception): the generator is
kept, unclosed, in ``dropped``. ``drive`` raises ServiceKilled to the SimPy process
that drove it, which ends quietly.
"""

from __future__ import annotations

import hashlib
import random
import types
from dataclasses import dataclass, field
from typing import Any

from common import effects as fx
from common import rpc
from common.effects import (
    Call,
    Cast,
    Choose,
    Destroy,
    GetInfo,
    ListDomains,
    NewId,
    Now,
    Reboot,
    Record,
    Sleep,
    Spawn,
    StoreCommand,
    Transaction,
)
from common.errors import (
    HypervisorError,
    NetworkDriverError,
    NovaError,
    RemoteError,
    RpcTimeout,
    Unroutable,
    UseYieldFrom,
)

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"

NET_EFFECTS = (
    fx.EnsureVlan, fx.EnsureBridge, fx.UpdateDhcp, fx.StopDhcp, fx.BindFloating, fx.UnbindFloating,
    fx.EnsureFloatingForward, fx.RemoveFloatingForward, fx.EnsureVpnForward, fx.InitHostNat,
)


def stream(seed: int, name: str) -> random.Random:
    """An independent, reproducible random stream for one component."""
    return random.Random(f"{seed}/{name}")


class ServiceKilled(Exception):
    """The agent driving a generator was killed; its process should end quietly."""


@dataclass
class Agent:
    """Who performs effects: a service on a host (one incarnation of it)."""

    name: str
    host: str = ""
    hypervisor: Any = None
    rng: random.Random = field(default=None, repr=False)  # type: ignore[assignment]  # the runtime always gives one
    netdriver: Any = None
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
    def __init__(self, env, seed: int, store, broker, timing, recorder):
        self.env = env
        self.seed = seed
        self.store = store
        self.broker = broker
        self.recorder = recorder
        self.inline = timing.inline_zero_latency
        self._store_rng = stream(seed, "latency/store")
        self._rpc_rng = stream(seed, "latency/rpc")
        self._ids_rng = stream(seed, "ids")
        self._store_latency = timing.store
        self._rpc_latency = timing.rpc
        self._issued_ids: set[str] = set()
        self._calls: dict[str, object] = {}
        self._call_counter = 0
        self._fingerprint = hashlib.blake2b(digest_size=16)
        self.effects = 0
        self.late_replies = 0
        #: Generators of killed agents, kept unclosed so that no ``finally:`` runs.
        self.dropped: list = []
        self._handlers: dict[type, Any] = {
            Transaction: self._transaction,
            Cast: self._cast,
            Call: self._call,
            Spawn: self._spawn,
            Destroy: self._destroy,
            Reboot: self._reboot,
            GetInfo: self._get_info,
            ListDomains: self._list_domains,
            Now: self._now,
            Sleep: self._sleep,
            NewId: self._new_id,
            Choose: self._choose,
            Record: self._record,
            **{kind: self._network for kind in NET_EFFECTS},
        }

    def register(self, effect_type, performer):
        """Perform ``effect_type`` with ``performer(agent, effect)``, a SimPy generator
        returning the result (how sim/ components plug in: directory, image cache)."""
        self._handlers[effect_type] = performer

    @property
    def fingerprint(self) -> str:
        return self._fingerprint.hexdigest()

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
        store = self.store
        fold = self._fingerprint.update
        send: Any = None
        throw: BaseException | None = None
        while True:
            if agent.watched and self._stopped(agent):
                self.dropped.append(gen)
                raise ServiceKilled(agent.name)
            try:
                effect = gen.throw(throw) if throw is not None else gen.send(send)
            except StopIteration as stop:
                return stop.value
            send = throw = None
            self.effects += 1
            if agent.watched:
                agent.performed += 1
            fold(f"{env.now!r} {agent.name} {effect!r}\n".encode())
            if isinstance(effect, StoreCommand):
                try:
                    send = store.execute(effect)
                except NovaError as e:  # StoreUnavailable during an outage
                    throw = e
                delay = self._store_latency.sample(self._store_rng)
                if delay > 0 or not self.inline:
                    yield env.timeout(delay)
                continue
            handler = self._handlers.get(type(effect))
            if handler is None:
                if not isinstance(effect, types.GeneratorType):
                    raise TypeError(f"{agent.name} yielded {effect!r}, which is not an effect")
                throw = UseYieldFrom(
                    f"{agent.name} yielded a generator ({effect.__qualname__}); use 'yield from' to call it"
                )
                continue
            try:
                send = yield from handler(agent, effect)
            except (NovaError, ValueError) as e:
                throw = e

    @staticmethod
    def _stopped(agent: Agent) -> bool:
        """Is ``agent`` dead? Fires its crash point first when it has been reached."""
        if agent.alive and agent.crash_after is not None and agent.performed >= agent.crash_after:
            agent.crash_after = None
            agent.on_crash()
        return not agent.alive

    # -- store ----------------------------------------------------------------------

    def _transaction(self, agent, tx):
        result = self.store.transaction(tx)
        delay = self._store_latency.sample(self._store_rng)
        if delay > 0 or not self.inline:
            yield self.env.timeout(delay)
        return result

    # -- rpc ----------------------------------------------------------------------

    def _cast(self, agent, cast):
        body = rpc.encode(rpc.envelope(cast.method, cast.args, cast.context))
        if not self.broker.publish(cast.topic, body):
            raise Unroutable(f"no queue is bound to topic {cast.topic!r} (cast {cast.method})")
        self.recorder.rpc_published(cast.topic, cast.method, None, self.env.now, agent.name)
        yield from self._hop()

    def _call(self, agent, call):
        self._call_counter += 1
        msg_id = f"{self._call_counter:012x}"
        body = rpc.encode(rpc.envelope(call.method, call.args, call.context, msg_id=msg_id))
        if not self.broker.publish(call.topic, body):
            raise Unroutable(f"no queue is bound to topic {call.topic!r} (call {call.method})")
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
        if reply["failure"] is not None:
            raise RemoteError(*reply["failure"])
        return reply["result"]

    def reply(self, msg_id: str, reply: dict):
        """A callee answers: the reply reaches the caller one broker hop later, or is
        dropped (and counted) when the caller stopped waiting."""

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

    def _hop(self):
        delay = self.rpc_latency()
        if delay > 0 or not self.inline:
            yield self.env.timeout(delay)

    # -- hypervisor -----------------------------------------------------------------

    def _hypervisor(self, agent):
        if agent.hypervisor is None:
            raise HypervisorError(f"{agent.name} has no hypervisor")
        return agent.hypervisor

    def _spawn(self, agent, spawn):
        return (yield from self._hypervisor(agent).spawn(spawn.spec))

    def _destroy(self, agent, destroy):
        return (yield from self._hypervisor(agent).destroy(destroy.name))

    def _reboot(self, agent, reboot):
        return (yield from self._hypervisor(agent).reboot(reboot.name))

    def _get_info(self, agent, get_info):
        return self._hypervisor(agent).info(get_info.name)
        yield  # a generator, like every handler

    def _list_domains(self, agent, _):
        return self._hypervisor(agent).names()
        yield

    def _network(self, agent, effect):
        if agent.netdriver is None:
            raise NetworkDriverError(f"{agent.name} has no network driver")
        return (yield from agent.netdriver.perform(effect))

    # -- time, ids, randomness, records -----------------------------------------

    def _now(self, agent, _):
        return float(self.env.now)  # SimPy's clock stays an int until a fractional delay
        yield

    def _sleep(self, agent, sleep):
        yield self.env.timeout(sleep.seconds)

    def _new_id(self, agent, new_id):
        rng = self._ids_rng
        while True:
            candidate = f"{new_id.prefix}-" + "".join(rng.choice(_ID_ALPHABET) for _ in range(8))
            if candidate not in self._issued_ids:
                self._issued_ids.add(candidate)
                return candidate
        yield

    def _choose(self, agent, choose):
        if not choose.options:
            raise ValueError("Choose needs at least one option")
        return choose.options[int(agent.rng.random() * len(choose.options))]
        yield

    def _record(self, agent, record):
        self.recorder.observe(record.event, self.env.now)
        return None
        yield
