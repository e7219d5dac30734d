"""The run's fingerprint: a hash over every effect performed, with its time, agent and arguments.

Theory of operation
-------------------
``drive`` adds each effect to a ``Trace``: the virtual time to ``stamps``, and two lines
to ``lines``: the agent's name and a text naming the effect's kind and its arguments.
The same scenario, seed and commit give the same effects in the same order, so the same
fingerprint; two runs that perform different effects (or the same ones at other times,
or by other agents) give different ones.

The text of an effect comes from a *describer* made once per effect class:

- an effect without fields: its constant text (``Now()``);
- ``ZAdd`` with float scores: its key and members; the scores go to ``stamps``;
- ``Transaction``: the texts of its ops (described as above) and its guards' fields;
- any other effect: its dataclass repr (without the recursion guard dataclasses wrap
  around it: an effect never contains itself, and the text is the same).

Floats go to ``stamps``, a stream of IEEE doubles, because printing a float (the
shortest digits that read back as it) costs more than the rest of a line, while its 8
bytes identify it exactly. The two streams are hashed apart and the fingerprint is the
hash of both digests. Both can be read back: two lines per effect, and each line's text
says how many doubles it added (one time per effect, then one per score it names).
Lines never contain a newline: agent names are topics and host names, and texts are
reprs.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

from common.effects import Transaction, ZAdd

#: Effects folded into the hashes at once (bounds the pending text to about 1 MB).
TRACE_BATCH = 4096

Describer = Callable[[Any], str]


class Trace:
    """The fingerprint of a run's effects (see the module docstring)."""

    def __init__(self) -> None:
        #: Two per effect: the agent's name, then the effect's text.
        self.lines: list[str] = []
        #: The time of each effect, and the floats its text names (ZAdd scores).
        self.stamps = array("d")
        self._text = hashlib.blake2b(digest_size=16)
        self._floats = hashlib.blake2b(digest_size=16)
        self._folded = 0
        self._describers: dict[type, Describer] = {}

    @property
    def effects(self) -> int:
        """How many effects were added."""
        return self._folded + len(self.lines) // 2

    @property
    def fingerprint(self) -> str:
        self.fold()
        return hashlib.blake2b(self._text.digest() + self._floats.digest(), digest_size=16).hexdigest()

    def fold(self) -> None:
        """Hash the pending lines and stamps (cleared in place: ``drive`` holds them)."""
        lines, stamps = self.lines, self.stamps
        if lines:
            self._folded += len(lines) // 2
            self._text.update(("\n".join(lines) + "\n").encode())
            lines.clear()
        if stamps:
            if sys.byteorder != "little":  # the same bytes on every machine
                stamps.byteswap()
            self._floats.update(stamps.tobytes())
            del stamps[:]

    def describer(self, kind: type) -> Describer:
        """-> the function giving the text of an effect of class ``kind`` (made once)."""
        describe = self._describers.get(kind)
        if describe is None:
            describe = self._describers[kind] = self._make_describer(kind)
        return describe

    def _make_describer(self, kind: type) -> Describer:
        if kind is ZAdd:
            return self._zadd
        if kind is Transaction:
            return self._transaction
        if is_dataclass(kind) and not fields(kind):
            text = f"{kind.__qualname__}()"
            return lambda effect: text
        return _unguarded_repr(kind)

    def _zadd(self, effect: ZAdd) -> str:
        mapping = effect.mapping
        scores = tuple(mapping.values())
        for score in scores:
            if type(score) is not float:
                return repr_of(effect)
        self.stamps.extend(scores)
        return f"ZAdd {effect.key!r} {tuple(mapping)!r}"

    def _transaction(self, tx: Transaction) -> str:
        describer = self.describer
        ops = ";".join([describer(type(op))(op) for op in tx.ops])
        guards = repr([(guard.key, guard.field, guard.expected) for guard in tx.guards])
        return f"Transaction [{ops}] {guards}"


def _unguarded_repr(kind: type) -> Describer:
    """``kind``'s ``__repr__`` without a dataclass's recursion guard."""
    method: Describer = kind.__repr__  # type: ignore[assignment]  # unbound: takes the instance
    return getattr(method, "__wrapped__", method)


def repr_of(effect: Any) -> str:
    """``repr(effect)`` without a dataclass's recursion guard."""
    return _unguarded_repr(type(effect))(effect)
