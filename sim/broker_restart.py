"""Broker restarts for the sim broker (sim/broker.py): ``kill -9`` of the node and its start.

What RabbitMQ does, and so what the model does: while the node is down every client
operation fails (a refused connection) and every consumer is cut off, its unacked
deliveries back in their queues. At the restart a durable queue is recovered from disk
with its persistent messages (its transient ones are gone); a transient queue is gone
altogether, with its bindings, until a service declares it again. ``crash`` also cuts
off the consumers; what is lost is counted at ``restart``.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class BrokerDown(Exception):
    """The broker is not running (between ``Broker.crash`` and ``Broker.restart``): what a
    client sees as a refused or dropped connection."""


class Restarts:
    """``crash`` and ``restart`` of ``sim.broker.Broker`` (a mixin over its state)."""

    _queues: dict[str, Any]
    _bindings: dict[str, list]
    _open_tags: dict[str, Any]
    _outbox: deque
    down: bool
    lost: int
    restarts: int

    def _check_up(self) -> None:
        if self.down:
            raise BrokerDown("the broker is down (connection refused)")

    def crash(self) -> None:
        """``kill -9`` of the node: every consumer is cut off (its unacked deliveries go
        back to their queues) and every client operation raises BrokerDown until
        ``restart``. What is lost shows at the restart."""
        if self.down:
            return
        self.down = True
        for consumer in list(self._open_tags.values()):
            consumer.close(_dispatch=False)
        self._outbox.clear()  # deliveries of closed consumers: already requeued
        for q in self._queues.values():
            q.avail.clear()

    def restart(self) -> int:
        """The node is back: a durable queue keeps its persistent messages, a transient
        queue is gone with its bindings and messages (a service declares it again when
        it reconnects). -> messages lost."""
        if not self.down:
            raise RuntimeError("restart() of a broker that is running; crash() it first")
        lost = 0
        for q in self._queues.values():
            kept = deque(m for m in q.ready if m.persistent) if q.durable else deque()
            q.lost += len(q.ready) - len(kept)
            lost += len(q.ready) - len(kept)
            q.ready = kept
            if not q.durable:
                q.declared = False
        for key in list(self._bindings):
            self._bindings[key] = [q for q in self._bindings[key] if q.declared]
            if not self._bindings[key]:
                del self._bindings[key]
        self.down = False
        self.lost += lost
        self.restarts += 1
        return lost
