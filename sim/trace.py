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
- ``ZAdd`` with float scores: its key and members, flat; the scores go to ``stamps``;
- ``Transaction`` and ``Batch``: their ops (and guards), flat (a ZAdd's scores to
  ``stamps``; an op without a flat form by its repr);
- any other effect: its dataclass repr (without the recursion guard dataclasses wrap
  around it: an effect never contains itself, and the text is the same).

A *flat* text is the effect's name and its string fields joined by control characters,
without a repr (a container's repr costs about as much per item as a Python call); it
is used only when every part is a str holding no separator and no newline, so it reads
back into exactly those parts; otherwise the effect's repr is its text.

Floats go to ``stamps``, a stream of IEEE doubles, because printing a float (the
shortest digits that read back as it) costs more than the rest of a line, while its 8
bytes identify it exactly. The two streams are hashed apart and the fingerprint is the
hash of both digests. Both can be read back: two lines per effect, and each line's text
says how many doubles it added (one time per effect, then one per score it names).
Lines never contain a newline: agent names are topics and host names, reprs escape
newlines, and flat texts are checked.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

from common import effects as fx

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
            self._text.update("\n".join(lines).encode())
            self._text.update(b"\n")
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
        if kind is fx.ZAdd:
            return self._zadd
        if kind is fx.Transaction:
            return self._transaction
        if kind is fx.Batch:
            return self._batch
        if is_dataclass(kind) and not fields(kind):
            text = f"{kind.__qualname__}()"
            return lambda effect: text
        return _unguarded_repr(kind)

    def _zadd(self, effect: fx.ZAdd) -> str:
        mapping = effect.mapping
        scores = tuple(mapping.values())
        if not _all_floats(scores):
            return repr_of(effect)
        text = _flat(["ZAdd", effect.key, *mapping])
        if text is None:
            return repr_of(effect)
        self.stamps.extend(scores)
        return text

    def _transaction(self, tx: fx.Transaction) -> str:
        flat = self._flat_ops("Transaction", tx.ops, tx.guards)
        if flat is not None:
            return flat
        describer = self.describer
        ops = ";".join([describer(type(op))(op) for op in tx.ops])
        guards = repr([(guard.key, guard.field, guard.expected) for guard in tx.guards])
        return f"Transaction [{ops}] {guards}"

    def _batch(self, batch: fx.Batch) -> str:
        flat = self._flat_ops("Batch", batch.ops, ())
        return repr_of(batch) if flat is None else flat

    def _flat_ops(self, name: str, ops: tuple, guards: tuple) -> str | None:
        """A transaction's or batch's text without a repr: each op and guard as its parts
        joined by ``_PART`` (a ZAdd with float scores as its key and members, its scores
        to ``stamps``; an op without a flat form as its repr, one part), the items joined
        by ``_ITEM``. None when a part is not a str or holds a separator (then the text
        could not be read back): the caller describes it by reprs."""
        items = []
        scores: list[float] = []
        parts = 0
        flat_ops, join = _FLAT_OPS.get, _PART.join
        try:
            for op in ops:
                flat = flat_ops(type(op))
                if flat is not None:
                    op_parts = flat(op)
                elif type(op) is fx.ZAdd and _all_floats(op.mapping.values()):
                    op_parts = ["ZAdd", op.key, *op.mapping]
                    scores += op.mapping.values()
                else:
                    op_parts = [repr_of(op)]
                parts += len(op_parts)
                items.append(join(op_parts))
            for guard in guards:
                expected = guard.expected
                if expected is None:
                    items.append(join(("Guard", guard.key, guard.field)))
                    parts += 3
                else:
                    items.append(join(("Guard=", guard.key, guard.field, expected)))
                    parts += 4
        except TypeError:  # a part that is not a str
            return None
        text = _ITEM.join(items)
        if text.count(_PART) != parts - len(items) or text.count(_ITEM) != len(items) - 1 or "\n" in text:
            return None
        if scores:
            self.stamps.extend(scores)
        return name + _ITEM + text


#: A flat text's separators: between the ops and guards of a transaction, and between
#: the parts of one. No repr holds them (it escapes control characters).
_ITEM, _PART = "\x1e", "\x1f"

#: Store op class -> its parts (strings, or a TypeError when one is not): the op's name,
#: then its fields; a mapping's keys, then its values. The number of parts tells how many.
_FLAT_OPS: dict[type, Callable[[Any], list[str]]] = {
    fx.HSet: lambda op: ["HSet", op.key, *op.mapping, *op.mapping.values()],
    fx.RPush: lambda op: ["RPush", op.key, *op.values],
    fx.SAdd: lambda op: ["SAdd", op.key, *op.members],
    fx.SRem: lambda op: ["SRem", op.key, *op.members],
    fx.ZRem: lambda op: ["ZRem", op.key, *op.members],
    fx.HDel: lambda op: ["HDel", op.key, *op.fields],
    fx.Del: lambda op: ["Del", *op.keys],
    fx.Get: lambda op: ["Get", op.key],
    fx.SetNX: lambda op: ["SetNX", op.key, op.value],
    fx.HGet: lambda op: ["HGet", op.key, op.field],
    fx.HGetAll: lambda op: ["HGetAll", op.key],
    fx.SMembers: lambda op: ["SMembers", op.key],
    fx.SCard: lambda op: ["SCard", op.key],
    fx.SPop: lambda op: ["SPop", op.key],
    fx.ZScore: lambda op: ["ZScore", op.key, op.member],
    fx.ZMScore: lambda op: ["ZMScore", op.key, *op.members],
}


def _flat(parts: list) -> str | None:
    """``parts`` joined by ``_PART``, or None when one is not a str or holds a separator."""
    try:
        text = _PART.join(parts)
    except TypeError:
        return None
    return text if text.count(_PART) == len(parts) - 1 and _ITEM not in text and "\n" not in text else None


def _all_floats(values) -> bool:
    for value in values:  # noqa: SIM110 (a loop costs less than all() over a generator)
        if type(value) is not float:
            return False
    return True


def _unguarded_repr(kind: type) -> Describer:
    """``kind``'s ``__repr__`` without a dataclass's recursion guard."""
    method: Describer = kind.__repr__  # type: ignore[assignment]  # unbound: takes the instance
    return getattr(method, "__wrapped__", method)


def repr_of(effect: Any) -> str:
    """``repr(effect)`` without a dataclass's recursion guard."""
    return _unguarded_repr(type(effect))(effect)
