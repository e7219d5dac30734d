"""Background work that outlives the services it depends on.

A periodic thread (heartbeat, periodic task, reaper, metrics sampler) must not die of a
broker or store error: a dead heartbeat thread makes a live service look down, a dead
sampler leaves holes in a run's report. ``Outage`` runs one step of such work, swallows
what it raises, and logs once when the work starts failing (with the traceback) and
once when it works again (with how many attempts failed), so an outage of an hour
costs two log lines instead of one per tick.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any


class Outage:
    """The failing-or-not state of one periodic task, for its log."""

    def __init__(self, logger: logging.Logger, what: str):
        self.log = logger
        self.what = what
        self.failing = False
        #: Failed attempts in the current outage, and outages seen so far.
        self.failures = 0
        self.outages = 0
        self._lock = threading.Lock()  # a metrics scrape may run in several threads

    def run(self, step: Callable[[], Any]) -> Any:
        """``step()``; on any exception, note it (logging only the first of an outage) and return None."""
        try:
            result = step()
        except Exception as e:
            self.failed(e)
            return None
        self.recovered()
        return result

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self.failures += 1
            if self.failing:
                return
            self.failing = True
            self.outages += 1
        self.log.warning("%s failing (%s: %s); retrying each period, logging again when it works",
                         self.what, type(error).__name__, error, exc_info=error)

    def recovered(self) -> None:
        with self._lock:
            if not self.failing:
                return
            self.failing, failures, self.failures = False, self.failures, 0
        self.log.warning("%s works again after %d failed attempts", self.what, failures)
