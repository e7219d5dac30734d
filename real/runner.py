"""The real runner: performs effects against live services, blocking, in the caller's
thread.

Theory of operation
-------------------
``drive(agent, gen)`` is the same loop as the sim's: resume the manager, take the
effect, perform it, send the result back or throw the error in. Here "perform" means a
Redis command or Lua transaction (real.store), an AMQP publish or a call waiting on
its reply (real.transport), a libvirt operation (real.libvirt_driver), a Linux network
command (real.linux_net), or the wall clock. Nothing here is simulated: latency is
whatever the services take.

Concurrency comes from the caller: each RPC server worker thread, heartbeat thread and
API request thread drives its own generators. The RPC client is per thread (kombu
connections are not thread-safe); the store client is thread-safe (redis-py pool).

Time can be compressed (``time_scale``): Now reports scenario seconds (wall seconds
since a shared origin times the scale, plus the origin) and Sleep sleeps scenario seconds
divided by the scale, so timeouts written in scenario seconds keep their meaning
relative to the workload.

Who performs what is a registration table (``common.performers.PerformerTable``), the
same as the sim's: the store (real.store), RPC and the runtime's own effects (this
class), each agent's own libvirt driver and linux_net (``AgentsOwn``); the directory,
image cache and key pair maker register theirs. A mixed run swaps performers per family
(see ``register``), not this loop.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
import types
from dataclasses import dataclass, field

from common.driving import run_blocking
from common.effects import Call, Cast, HypervisorEffect, NetDriverEffect, RpcEffect, RuntimeEffect, StoreEffect
from common.errors import HypervisorError, NetworkDriverError, UseYieldFrom
from common.performers import AgentsOwn, HypervisorPerformer, NetDriverPerformer, PerformerTable

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass
class Agent:
    """Who performs effects: a service on a host, with its own drivers."""

    name: str
    host: str = ""
    hypervisor: HypervisorPerformer | None = None
    netdriver: NetDriverPerformer | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(secrets.randbits(64)), repr=False)


class RealRuntime:
    def __init__(self, store, rpc_client_factory, recorder=None, time_scale: float = 1.0,
                 time_origin: float | None = None):
        self.store = store
        self._make_client = rpc_client_factory
        self.recorder = recorder
        self.time_scale = time_scale
        #: Every process of one run shares the origin, so their scaled clocks agree.
        self._wall_start = time.time() if time_origin is None else time_origin
        self._local = threading.local()
        self._clients: list = []
        self._clients_lock = threading.Lock()
        self.effects = 0
        self.performers = PerformerTable()
        if store is not None:
            self.register(StoreEffect, store)
        self.register(RpcEffect, self)
        self.register(HypervisorEffect, AgentsOwn("hypervisor", HypervisorError, "hypervisor"))
        self.register(NetDriverEffect, AgentsOwn("netdriver", NetworkDriverError, "network driver"))
        self.register(RuntimeEffect, self)

    def register(self, family_or_type: type, performer) -> None:
        """Perform a family (``common.effects.FAMILIES``) with ``performer``, which
        satisfies the family's Protocol (``common.performers``), or with ``AgentsOwn``
        (each agent's own: libvirt, linux_net); or one effect class with a function
        ``(agent, effect)``. Performers block and return the result. How real/
        components plug in (directory, image cache, key pairs), and how a mixed run
        would be assembled: keep this runtime's store and RPC, and give hundreds of
        compute agents in one process a simulated hypervisor each (``AgentsOwn``); a
        SimPy-generator performer then needs a wall-clock SimPy environment to run in.
        """
        self.performers.register(family_or_type, performer)

    # -- time -----------------------------------------------------------------------

    def now(self) -> float:
        """Scenario seconds: the wall clock, sped up by time_scale from the start."""
        wall = time.time()
        return self._wall_start + (wall - self._wall_start) * self.time_scale

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.time_scale)

    # -- RuntimePerformer's other effects: ids, randomness, records -----------------

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))

    def choose(self, agent, options: tuple | range):
        if not options:
            raise ValueError("Choose needs at least one option")
        return agent.rng.choice(options)

    def record(self, event) -> None:
        if self.recorder is not None:
            self.recorder.observe(event, self.now())

    # -- RpcPerformer: kombu over RabbitMQ, one client per thread -------------------

    def cast(self, agent, cast: Cast) -> None:
        return self.rpc().cast(cast.topic, cast.method, cast.args, cast.context)

    def call(self, agent, call: Call):
        return self.rpc().call(call.topic, call.method, call.args, call.context, timeout=call.timeout / self.time_scale)

    # -- rpc client per thread ------------------------------------------------------

    def rpc(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make_client()
            with self._clients_lock:
                self._clients.append(client)
        return client

    def close(self):
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # closing during shutdown: nothing left to do with it
                pass

    # -- the loop -----------------------------------------------------------------

    def drive(self, agent: Agent, gen):
        return run_blocking(gen, lambda effect: self._count_and_perform(agent, effect))

    def _count_and_perform(self, agent, effect):
        self.effects += 1
        return self.perform(agent, effect)

    def perform(self, agent: Agent, effect):
        kind = type(effect)
        entry = self.performers.resolved.get(kind) or self.performers.lookup(kind)
        if entry is None:
            if kind is types.GeneratorType:
                raise UseYieldFrom(f"{agent.name} yielded a generator ({effect.__qualname__}); use 'yield from' to call it")
            raise TypeError(f"{agent.name} yielded {effect!r}, which is not an effect with a registered performer")
        result = entry[0](agent, effect)
        if type(result) is types.GeneratorType:
            # A SimPy-model performer registered here: its time would never pass.
            raise TypeError(f"the performer of {kind.__name__} returned a SimPy generator; a real runtime needs a blocking one")
        return result
