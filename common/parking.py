"""Parking: dead hosts out of the simple scheduler's way, back on their next heartbeat.

The simple scheduler reads only the first few hosts of ``compute:cores`` by claimed
vCPUs (``common.scheduler``), so a dead host with few claimed cores would sit at the
front of every read and hide the live hosts behind it. When the scheduler finds a
candidate dead it *parks* it: it adds ``PARKED_OFFSET`` to the host's score, which
lifts the host past any ``max_cores`` so no read for room returns it, and notes the
host in ``compute:parked``. The host's next heartbeat reads that note in the same round
trip as its heartbeat (``common.service.report_state``) and *unparks* itself.

Why an offset and not a move to another key: vCPUs are claimed and given back with
ZINCRBY by several services at once (a terminate on a dead host gives its cores back);
an offset commutes with them, a move would lose the ones landing in between. A claim
ZINCRBY that lands on a parked host reads over ``max_cores`` and is undone, as a race
for the last cores is. The cores a host has claimed are its score less the offset
while it is parked (``claimed``).

Each park and unpark is one guarded transaction, the note and the offset together:
a park holds only when the note is absent, an unpark only when it is the one read,
so the offset is applied exactly when the note is there, whoever races. The dead
hosts one read finds are parked in one transaction (one by one when another
scheduler parked one of them first). A park also
reads the heartbeat in the same transaction: when the host beat after the scheduler
read it dead (so its beat did not see the note), the scheduler unparks it at once, and
a live host is never left parked.
"""

from __future__ import annotations

from common import keys
from common.effects import Guard, HDel, HSet, Transaction, ZIncrBy, ZMScore

#: The topic whose hosts are parked: ``compute:cores`` and ``compute:parked`` name its hosts.
TOPIC = "compute"

#: Added to a parked host's score in ``compute:cores``: far above any max_cores, and a
#: power of two well inside a double's 53 bits, so integer vCPU counts stay exact.
PARKED_OFFSET = float(2**30)


def claimed(score: float) -> float:
    """The vCPUs a host has claimed, from its score in ``compute:cores``."""
    return score - PARKED_OFFSET if score >= PARKED_OFFSET / 2 else score


def park(topic: str, hosts: tuple[str, ...], now: float):
    """Park ``hosts``, found dead on ``topic`` at ``now`` (module docstring): all in one
    transaction, or one by one when another scheduler parked one of them first.
    -> (the token to unpark them with, {host this call parked: its heartbeat on
    ``topic`` read in the same transaction, or None})."""
    token = repr(now)
    parked = yield from _park_together(topic, hosts, token)
    if parked is None:
        parked = {}
        for host in hosts:
            parked.update((yield from _park_together(topic, (host,), token)) or {})
    return token, parked


def _park_together(topic: str, hosts: tuple[str, ...], token: str):
    """-> {host: heartbeat} when none of ``hosts`` was parked and this call parked them
    all, else None (then nothing was written)."""
    done = yield Transaction(
        ops=(HSet(keys.COMPUTE_PARKED, dict.fromkeys(hosts, token)),
             *(ZIncrBy(keys.COMPUTE_CORES, PARKED_OFFSET, host) for host in hosts),
             ZMScore(keys.heartbeats(topic), hosts)),
        guards=tuple(Guard(keys.COMPUTE_PARKED, host, None) for host in hosts),
    )
    return None if done is None else dict(zip(hosts, done[-1], strict=True))


def unpark(host: str, token: str):
    """Take ``host`` out of the parked hosts if it is still parked under ``token``.
    -> True when this call unparked it."""
    done = yield Transaction(
        ops=(HDel(keys.COMPUTE_PARKED, (host,)), ZIncrBy(keys.COMPUTE_CORES, -PARKED_OFFSET, host)),
        guards=(Guard(keys.COMPUTE_PARKED, host, token),),
    )
    return done is not None
