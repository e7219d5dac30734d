"""A store that stalls past its clients' timeouts while still running their commands.

``StallingStore`` wraps the run's store (any ``common.performers.StorePerformer``) and
plays the fault plan's ``store_stall``. It is registered in the store's place only when
the plan has a stall, so a run without one pays nothing for it.

*What it models*: a Redis server that stops serving for a while (``DEBUG SLEEP``, a long
fork for a snapshot on a big dataset, a stopped VM) and clients using redis-py with a
``socket_timeout`` (``real.store.RedisStore``: 5 s in the daemons, no retries). A command
sent while the server sleeps waits in the socket; the server runs it when it wakes up,
in arrival order, whether or not its client is still waiting:

* the stall ends within the client's timeout: the caller gets its reply then (late);
* it does not: the caller gets ``StoreUnavailable`` once its timeout has passed, and the
  command still runs when the stall ends. That is the *ambiguous outcome*: the caller
  cannot tell whether its write happened, and a caller that was killed meanwhile has its
  last command run too (the bytes were on the wire).

A transaction (one Lua script on a real server) or a batch (one round trip) is one
command: all of it runs late, or none of it before the stall ends.

*Not modelled*: on a real server, a command that needs a *new* connection during the
stall (redis-py drops a connection after a timeout, and the next one's handshake is not
answered either) is never sent, so it fails without running, as in ``store_outage``.
This model runs every command late, the harder case for the callers. Latency spikes
short of a stall, a server that never comes back and lost writes are not modelled here.
"""

from __future__ import annotations

from typing import Any

from common.effects import StoreCommand, Transaction
from common.errors import NovaError, StoreUnavailable

#: Seconds a caller waits for a reply: redis-py's ``socket_timeout`` as the daemons set it
#: (their ``connect_timeout``, 5 s by default).
CLIENT_TIMEOUT = 5.0


class StallingStore:
    """A ``common.performers.StorePerformer`` around ``inner``; ``stall(seconds)`` (a
    SimPy process body) makes it answer nothing for that long, and ``stall_at_command``
    from a given command on (a store crash point, swept to stall every step of a workflow)."""

    def __init__(self, env, inner, client_timeout: float = CLIENT_TIMEOUT):
        self.env = env
        self.inner = inner
        self.client_timeout = client_timeout
        self.stalled = False
        #: Commands sent during the stall, in arrival order: (run, reply event).
        self._waiting: list[tuple[Any, Any]] = []
        #: Callers that gave up on a command that still ran (ambiguous outcomes).
        self.timed_out = 0
        #: Commands the server ran late, when a stall ended.
        self.ran_late = 0
        #: Commands sent so far, and the one a stall begins with (stall_at_command).
        self.sent = 0
        self._stall_at: tuple[int, float, Any] | None = None

    # -- StorePerformer --------------------------------------------------------------

    def execute(self, command: StoreCommand):
        self._count()
        if not self.stalled:
            return self.inner.execute(command)
        return self._late(lambda: self.inner.execute(command), command.command)

    def transaction(self, tx: Transaction):
        self._count()
        if not self.stalled:
            return self.inner.transaction(tx)
        return self._late(lambda: self.inner.transaction(tx), "transaction")

    def batch(self, batch):
        self._count()
        if not self.stalled:
            return self.inner.batch(batch)
        return self._late(lambda: self.inner.batch(batch), "batch")

    def _count(self) -> None:
        self.sent += 1
        if self._stall_at is not None and self.sent >= self._stall_at[0]:
            _, seconds, started = self._stall_at
            self._stall_at = None
            self.env.process(self.stall(seconds))
            self.stalled = True  # already for this command: the stall's process starts after it
            started.succeed()

    # -- the fault ---------------------------------------------------------------------

    def stall_at_command(self, command: int, seconds: float, started) -> None:
        """Stall for ``seconds`` from the ``command``-th command sent from now on (that
        command is the first to run late); ``started`` (a SimPy event) succeeds then."""
        self.sent = 0
        self._stall_at = (command, seconds, started)

    def stall(self, seconds: float):
        """SimPy process body: stall for ``seconds``, then run what was sent, in order."""
        self.stalled = True
        yield self.env.timeout(seconds)
        self.stalled = False
        waiting, self._waiting = self._waiting, []
        for run, reply in waiting:
            try:
                outcome: tuple[bool, Any] = (True, run())
            except NovaError as e:  # e.g. the store is also down: the caller sees it, if it waits
                outcome = (False, e)
            self.ran_late += 1
            reply.succeed(outcome)

    def _late(self, run, what: str):
        """The caller's side of a command sent during the stall (a SimPy generator)."""
        reply = self.env.event()
        self._waiting.append((run, reply))
        yield reply | self.env.timeout(self.client_timeout)
        if not reply.triggered:
            self.timed_out += 1
            raise StoreUnavailable(
                f"no reply to {what} within {self.client_timeout:g} s (the store is stalled; it may still run it)")
        ok, value = reply.value
        if not ok:
            raise value
        return value

    # -- what the run reads beside the effects ----------------------------------------

    def __getattr__(self, name: str):
        # dump(), scard(), commands, flush(), ...: the inner store's, unchanged.
        return getattr(self.inner, name)


def wrap(env, store, faults) -> StallingStore | None:
    """A StallingStore around ``store`` when the fault plan has a ``store_stall``, else None."""
    if any(fault.store_stall is not None for fault in faults):
        return StallingStore(env, store)
    return None
