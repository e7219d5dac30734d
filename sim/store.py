"""The simulated datastores: what both share (``StoreFront``) and the fakeredis one.

A scenario picks its store with ``sim.store``: ``memory`` (``sim.memstore.MemoryStore``,
the default: the same commands on plain Python objects, tens of times faster) or
``fakeredis`` (``SimStore`` below, the reference fake). Both answer as Redis does, held
to it by the store contract suite, and to each other by a whole-scenario differential
test.

``SimStore``: fakeredis, one FakeServer per run.

*Features*: every Redis command the managers use, with Redis's own semantics (fakeredis
implements them); guarded transactions run at one instant of virtual time, which is
exactly the atomicity a Lua script gives on a real server.

*Features*, continued: an outage switch (``down``, the fault plan's ``store_outage``):
while it is on, every command and transaction raises StoreUnavailable, as redis-py's
connection errors do in ``real/store.py``.

*Features*, continued: ``flush`` forgets every key at once (a fresh FakeServer), which is
the fault plan's ``store_wipe``: Redis restarted without persistence.

*What it does not model*: latency spikes, losing only the last writes (a failover to a
lagging replica), memory limits, persistence, replication. fakeredis (2.40+): SPOP
draws from Python's global ``random``: the run seeds it, so pool order is reproducible
in sim (it never is on a real Redis: compare runs on properties, not on which address).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import fakeredis
from redis.exceptions import ResponseError

from common.effects import Guard, HGet, Transaction
from common.errors import StoreUnavailable

_WITH_SCORES = {"withscores": True}
_NO_OPTIONS: dict = {}


def _client(server):
    # One connection for the run's single thread: redis-py's pool would check a
    # connection out and back in on every command.
    return fakeredis.FakeStrictRedis(server=server, decode_responses=True, single_connection_client=True)


class _DirectPath:
    """Hands a command to fakeredis's socket without redis-py's wire round trip (encode
    to RESP, parse it back, queue the reply): about half of a command's cost, and the
    500-host run makes ~300,000 of them. The reply then goes through redis-py's own
    decoding and response callbacks, so it has the shape ``execute_command`` gives;
    the store contract tests and a differential test hold the two paths together.

    This leans on fakeredis internals (``FakeSocket._process_command`` and its reply
    queue): ``attach`` returns None when they are not there, and SimStore then keeps to
    the public client.
    """

    def __init__(self, client, sock):
        self.sock = sock
        self.connection = client.connection
        self.encode = client.connection.encoder.encode
        self.callbacks = client.response_callbacks

    @classmethod
    def attach(cls, client):
        client.ping()  # opens the single connection
        sock = getattr(client.connection, "_sock", None)
        if not (hasattr(sock, "_process_command") and hasattr(sock, "responses")
                and hasattr(client.connection, "_decode")):
            return None
        path = cls(client, sock)
        try:
            if path.execute("ECHO", ("novalab",), {}) != "novalab":
                return None
        except Exception:
            return None
        return path

    def execute(self, name: str, args, options):
        encode = self.encode
        self.sock._process_command([name.encode(), *(encode(a) for a in args)])
        reply = self.sock.responses.get_nowait()
        if isinstance(reply, Exception):
            raise reply
        reply = self.connection._decode(reply)
        callback = self.callbacks.get(name)
        return callback(reply, **options) if callback is not None else reply


class StoreFront:
    """What every sim store shares: the command count, the outage switch and guarded
    transactions. A subclass gives ``execute(command)`` (which counts the command and
    calls ``unavailable`` while ``down``), ``scard``, ``flush`` and ``dump``."""

    #: The store's name in a scenario's ``sim.store``.
    kind: ClassVar[str] = ""

    def __init__(self):
        self.commands = 0
        #: The outage switch: while True every command raises StoreUnavailable.
        self.down = False
        #: Store effect class -> the function running it (``executor``), made once.
        self._executors: dict[type, Callable[[Any], Any]] = {}

    def execute(self, command):
        raise NotImplementedError

    def executor(self, kind: type) -> Callable[[Any], Any]:
        """-> a function running commands of store effect class ``kind`` exactly as
        ``execute`` does (made once per class by ``make_executor``)."""
        run = self._executors.get(kind)
        if run is None:
            run = self._executors[kind] = self.make_executor(kind)
        return run

    def make_executor(self, kind: type) -> Callable[[Any], Any]:
        """``executor``'s function for ``kind``: ``execute``; a store may give a faster
        one for its hot commands."""
        return self.execute

    def unavailable(self, what: str):
        raise StoreUnavailable(f"the store is unreachable (outage): {what} not sent")

    def guard_holds(self, guard: Guard) -> bool:
        """Check one guard (counted as the HGET it is)."""
        return self.execute(HGet(guard.key, guard.field)) == guard.expected

    def transaction(self, tx: Transaction):
        """-> the ops' results, or None when a guard fails (then nothing is written).
        Raises StoreUnavailable during an outage, before anything is read or written.
        The ops run one after another at one instant of virtual time: no other effect
        runs in between, which is the atomicity a Lua script has on a real server."""
        if self.down:
            self.commands += 1
            self.unavailable("transaction")
        for guard in tx.guards:
            if not self.guard_holds(guard):
                return None
        executors, executor = self._executors, self.executor  # the dict first: no call once made
        return [(executors.get(type(op)) or executor(type(op)))(op) for op in tx.ops]

    def batch(self, batch) -> list:
        """-> the results of ``batch.ops``, run at one instant (one round trip). Like
        EXEC, an op the store refuses does not stop the others; the first such error is
        raised after them. Raises StoreUnavailable during an outage, before anything runs."""
        if self.down:
            self.commands += 1
            self.unavailable("batch")
        results, error = [], None
        executors, executor = self._executors, self.executor
        for op in batch.ops:
            try:
                results.append((executors.get(type(op)) or executor(type(op)))(op))
            except ResponseError as e:
                error = error or e
        if error is not None:
            raise error
        return results

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


class SimStore(StoreFront):
    """The run's datastore on fakeredis; a ``common.performers.StorePerformer``."""

    kind = "fakeredis"

    def __init__(self, direct: bool = True):
        """``direct=False`` keeps every command on redis-py's public client path."""
        super().__init__()
        self.server = fakeredis.FakeServer()
        self.client = _client(self.server)
        self.direct = _DirectPath.attach(self.client) if direct else None

    def execute(self, command):
        self.commands += 1
        if self.down:
            self.unavailable(command.command)
        options = _WITH_SCORES if command.command in ("ZRANGEBYSCORE", "ZRANGE") else _NO_OPTIONS
        if self.direct is not None:
            return self.direct.execute(command.command, command.args, options)
        return self.client.execute_command(command.command, *command.args, **options)

    def flush(self) -> int:
        """Forget every key (a fresh server); returns how many there were."""
        count = self.client.dbsize()
        self.server = fakeredis.FakeServer()
        self.client = _client(self.server)
        self.direct = _DirectPath.attach(self.client) if self.direct is not None else None
        return count

    def scard(self, key: str) -> int:
        """An instrumentation read: not a manager's effect, not counted."""
        return self.client.scard(key)

    def dump(self) -> dict:
        """Every key with its value as a Python object (the invariant checkers' input)."""
        client = self.client
        readers = {
            "string": client.get,
            "hash": client.hgetall,
            "set": client.smembers,
            "list": lambda k: client.lrange(k, 0, -1),
            "zset": lambda k: dict(client.zrange(k, 0, -1, withscores=True)),
        }
        out = {}
        for key in client.scan_iter(count=10_000):
            out[key] = readers[client.type(key)](key)
        return out
