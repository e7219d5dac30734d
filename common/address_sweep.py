"""The leak sweep of fixed-address pools: addresses a crash left neither free nor recorded.

An allocation SPOPs an address, then records it in a second step; a network worker
that dies between the two leaves the address nowhere. The sweep (a network worker's
start-up and periodic task, ``common.network``) finds such addresses and puts them back
once they have been missing for a grace period. It is cheap when nothing is missing
(two SCARDs per network) and bounded when something is (``SWEEP_BATCH`` returns).
"""

from __future__ import annotations

from common import keys
from common.effects import Del, Guard, HGet, Now, SAdd, SCard, SMembers, Transaction, ZAdd, ZRangeByScore, ZRem

#: Leaked addresses one sweep returns per network, so one pass never holds a network
#: worker for long; the next pass takes the rest.
SWEEP_BATCH = 200


def sweep(specs, grace: float):
    """Return to their pools the addresses of ``specs`` (``common.network.NetworkSpec``)
    missing for ``grace`` seconds; -> how many it returned (see
    ``FlatManager.sweep_leaked_addresses``)."""
    now = float((yield Now()))
    returned = 0
    for spec in specs:
        nid, suspects = spec.network_id, keys.leak_suspects(spec.network_id)
        free = yield SCard(keys.available(nid))
        held = yield SCard(keys.network_fixedips(nid))
        if free + held >= len(spec.addresses):
            yield Del((suspects,))
            continue
        held_until = yield HGet(keys.network(nid), "held_until")
        if held_until and float(held_until) > now:
            continue  # re-created after a loss: its pool is held back on purpose (common.recovery)
        free_set = set((yield SMembers(keys.available(nid))))
        held_set = set((yield SMembers(keys.network_fixedips(nid))))
        missing = [a for a in spec.addresses if a not in free_set and a not in held_set]
        seen = dict((yield ZRangeByScore(suspects, "-inf", "+inf")))
        lost = set(missing)
        gone = tuple(a for a in seen if a not in lost)
        if gone:
            yield ZRem(suspects, gone)
        new = {a: now for a in missing if a not in seen}
        if new and grace > 0:
            yield ZAdd(suspects, new)
        due = [a for a in missing if now - seen.get(a, now) >= grace][:SWEEP_BATCH]
        for address in due:
            done = yield Transaction(
                ops=(SAdd(keys.available(nid), (address,)), ZRem(suspects, (address,))),
                guards=(Guard(keys.fixedip(address), "address", None),),
            )
            returned += done is not None
    return returned
