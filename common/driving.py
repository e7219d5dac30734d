"""Driving a manager generator to completion with a blocking performer.

The loop every blocking runner needs: resume the generator with the last result (or
throw the last error in), hand the next effect to ``perform``, repeat until it returns.
Only manager-level errors (``NovaError``), ``ValueError`` and ``UseYieldFrom`` are thrown
back in; anything else is a bug in the runner or the performer and propagates.
The sim runner cannot use it: it must yield SimPy events between effects.
"""

from __future__ import annotations

from common.errors import NovaError, UseYieldFrom

#: What a performer may raise that the manager is expected to handle.
THROWN_IN = (NovaError, ValueError, UseYieldFrom)


def run_blocking(gen, perform):
    """-> the generator's return value; ``perform(effect)`` returns each result."""
    send = throw = None
    while True:
        try:
            effect = gen.throw(throw) if throw is not None else gen.send(send)
        except StopIteration as stop:
            return stop.value
        send = throw = None
        try:
            send = perform(effect)
        except THROWN_IN as e:
            throw = e
