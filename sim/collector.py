"""The cyclic garbage collector while a simulation runs.

A run makes millions of short-lived objects (effects, SimPy events, generator frames)
while its long-lived state (records, sets, queues, timers) grows to hundreds of MB at
10,000 hosts. With CPython's default thresholds a full collection starts each time the
long-lived objects grew by a quarter, and each walks all of them: at 1,000 hosts and
10,000 launches that was 13 % of the run's CPU, and the share grows with the heap.

During a run (``tuned``) the youngest generation is collected every ``YOUNG`` net
allocations instead of 700, and the oldest rarely: a run's objects die young (freed by
reference counting, not by the collector) or live to the end of the run. The caller's
thresholds come back when the run ends, so a notebook or test process that runs a
simulation keeps its own.

Collections do not change a run's results: the generators of killed agents are kept
(``SimRuntime.dropped``), so no manager's ``finally:`` runs at a collection;
tests/sim/test_collector.py runs a scenario with kills under two settings and compares
fingerprints.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: Net allocations between collections of the youngest generation (CPython: 700). Big
#: enough that SimPy's events and the effects in flight die before a collection sees them.
YOUNG = 50_000
#: Young collections per middle one, middle ones per full one (CPython: 10 and 10).
MIDDLE, OLD = 20, 100


@contextmanager
def tuned() -> Iterator[None]:
    """Collect with ``YOUNG``, ``MIDDLE`` and ``OLD`` for the duration of the block, then
    restore the caller's thresholds (a disabled collector stays disabled)."""
    saved = gc.get_threshold()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
    try:
        yield
    finally:
        gc.set_threshold(*saved)
