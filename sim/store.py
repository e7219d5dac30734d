"""The simulated datastore: fakeredis, one FakeServer per run.

*Features*: every Redis command the managers use, with Redis's own semantics (fakeredis
implements them); guarded transactions run at one instant of virtual time, which is
exactly the atomicity a Lua script gives on a real server.

*Not supported*: outages, latency spikes and lost writes (the fault plan will inject
them around this class), memory limits, persistence, replication. fakeredis's SPOP
draws from Python's global ``random``: the run seeds it, so pool order is reproducible
in sim (it never is on a real Redis: compare runs on properties, not on which address).
"""

from __future__ import annotations

import fakeredis

from common.effects import Transaction


class SimStore:
    def __init__(self):
        self.server = fakeredis.FakeServer()
        self.client = fakeredis.FakeStrictRedis(server=self.server, decode_responses=True)
        self.commands = 0

    def execute(self, command):
        self.commands += 1
        if command.command == "ZRANGEBYSCORE":
            return self.client.execute_command(command.command, *command.args, withscores=True)
        return self.client.execute_command(command.command, *command.args)

    def transaction(self, tx: Transaction):
        """-> the ops' results, or None when a guard fails (then nothing is written)."""
        client = self.client
        for guard in tx.guards:
            self.commands += 1
            if client.hget(guard.key, guard.field) != guard.expected:
                return None
        return [self.execute(op) for op in tx.ops]

    def ping(self) -> bool:
        return True

    def flush(self) -> int:
        """Forget every key (a fresh server); returns how many there were."""
        count = self.client.dbsize()
        self.server = fakeredis.FakeServer()
        self.client = fakeredis.FakeStrictRedis(server=self.server, decode_responses=True)
        return count

    def close(self) -> None:
        pass

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
