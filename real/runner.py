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
"""

from __future__ import annotations

import random
import secrets
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any

from common.driving import run_blocking
from common.effects import (
    BindFloating,
    Call,
    Cast,
    Choose,
    Destroy,
    EnsureBridge,
    EnsureFloatingForward,
    EnsureVlan,
    EnsureVpnForward,
    GetInfo,
    InitHostNat,
    ListDomains,
    NewId,
    Now,
    Reboot,
    Record,
    RemoveFloatingForward,
    Sleep,
    Spawn,
    StopDhcp,
    StoreCommand,
    Transaction,
    UnbindFloating,
    UpdateDhcp,
)
from common.errors import HypervisorError, NetworkDriverError, UseYieldFrom

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_NET_EFFECTS = (
    EnsureVlan, EnsureBridge, UpdateDhcp, StopDhcp, BindFloating, UnbindFloating,
    EnsureFloatingForward, RemoveFloatingForward, EnsureVpnForward, InitHostNat,
)


@dataclass
class Agent:
    """Who performs effects: a service on a host, with its own drivers."""

    name: str
    host: str = ""
    hypervisor: Any = None
    netdriver: Any = None
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
        self._extra: dict = {}
        self.effects = 0

    def register(self, effect_type, performer):
        """Perform ``effect_type`` with ``performer(agent, effect)`` (blocking), how
        real/ components plug in: the directory, the image cache."""
        self._extra[effect_type] = performer

    # -- time -----------------------------------------------------------------------

    def now(self) -> float:
        """Scenario seconds: the wall clock, sped up by time_scale from the start."""
        wall = time.time()
        return self._wall_start + (wall - self._wall_start) * self.time_scale

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.time_scale)

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
        if isinstance(effect, StoreCommand):
            return self.store.execute(effect)
        kind = type(effect)
        extra = self._extra.get(kind)
        if extra is not None:
            return extra(agent, effect)
        if kind is Transaction:
            return self.store.transaction(effect)
        if kind is Cast:
            return self.rpc().cast(effect.topic, effect.method, effect.args, effect.context)
        if kind is Call:
            return self.rpc().call(effect.topic, effect.method, effect.args, effect.context, timeout=effect.timeout / self.time_scale)
        if kind is Now:
            return self.now()
        if kind is Sleep:
            return self.sleep(effect.seconds)
        if kind is NewId:
            return f"{effect.prefix}-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
        if kind is Choose:
            if not effect.options:
                raise ValueError("Choose needs at least one option")
            return agent.rng.choice(effect.options)
        if kind is Record:
            if self.recorder is not None:
                self.recorder.observe(effect.event, self.now())
            return None
        if kind in (Spawn, Destroy, Reboot, GetInfo, ListDomains):
            return self._hypervisor(agent, effect)
        if kind in _NET_EFFECTS:
            if agent.netdriver is None:
                raise NetworkDriverError(f"{agent.name} has no network driver")
            return agent.netdriver.perform(effect)
        if isinstance(effect, types.GeneratorType):
            raise UseYieldFrom(f"{agent.name} yielded a generator ({effect.__qualname__}); use 'yield from' to call it")
        raise TypeError(f"{agent.name} yielded {effect!r}, which is not an effect")

    def _hypervisor(self, agent: Agent, effect):
        hv = agent.hypervisor
        if hv is None:
            raise HypervisorError(f"{agent.name} has no hypervisor")
        kind = type(effect)
        if kind is Spawn:
            return hv.spawn(effect.spec)
        if kind is Destroy:
            return hv.destroy(effect.name)
        if kind is Reboot:
            return hv.reboot(effect.name)
        if kind is GetInfo:
            return hv.info(effect.name)
        return hv.names()
