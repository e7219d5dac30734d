"""How Redis keeps values and reads arguments, for ``sim.memstore.MemoryStore``: a set and
a sorted set shaped as fakeredis keeps them (so both stores draw and order alike), and
the parsers of integer, float and range arguments with Redis 7's rules and errors (as
redis-py raises them)."""

from __future__ import annotations

import math
import random

from redis.exceptions import DataError, ResponseError
from sortedcontainers import SortedList

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOT_INTEGER = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
INT64 = (-(1 << 63), (1 << 63) - 1)


class RedisSet:
    """A Redis set as fakeredis 2.40+ keeps one: members in insertion order, plus the
    list SPOP picks from (built on first use, kept through SADD and SPOP, rebuilt after
    SREM), so that both stores draw the same member from the same random stream."""

    __slots__ = ("members", "order")

    def __init__(self):
        self.members: dict[str, None] = {}
        self.order: list[str] | None = None

    def __len__(self) -> int:
        return len(self.members)

    def add(self, member: str) -> bool:
        if member in self.members:
            return False
        self.members[member] = None
        if self.order is not None:
            self.order.append(member)
        return True

    def discard(self, member: str) -> bool:
        if self.members.pop(member, self) is self:
            return False
        self.order = None
        return True

    remove = discard  # as SortedSet's

    def pop(self, rng: random.Random) -> str:
        order = self.order
        if order is None:
            order = self.order = list(self.members)
        index = rng.randrange(len(order))
        order[index], order[-1] = order[-1], order[index]
        member = order.pop()
        del self.members[member]
        return member


class SortedSet:
    """A Redis sorted set: member -> score, and the (score, member) pairs in order.

    The order is brought up to date when it is read (a range, a dump), not on every
    write: heartbeats rewrite one member's score every few seconds, and most runs read
    the order far less often. ``stale`` maps each member written since the last read to
    the score the order still holds for it (None: not in it); it is bounded by the
    number of members."""

    __slots__ = ("scores", "sorted", "stale")

    def __init__(self):
        self.scores: dict[str, float] = {}
        self.sorted = SortedList()
        self.stale: dict[str, float | None] = {}

    def __len__(self) -> int:
        return len(self.scores)

    def set(self, member: str, score: float) -> bool:
        old = self.scores.get(member)
        if old == score:
            return False
        if member not in self.stale:
            self.stale[member] = old
        self.scores[member] = score
        return old is None

    def remove(self, member: str) -> bool:
        score = self.scores.pop(member, None)
        if score is None:
            return False
        if member not in self.stale:
            self.stale[member] = score
        return True

    @property
    def ordered(self) -> SortedList:
        if self.stale:
            ordered, scores = self.sorted, self.scores
            for member, held in self.stale.items():
                if held is not None:
                    ordered.remove((held, member))
                score = scores.get(member)
                if score is not None:
                    ordered.add((score, member))
            self.stale.clear()
        return self.sorted


def error(reply: str) -> ResponseError:
    """Redis's error reply as redis-py raises it: without "ERR ", with any other code (WRONGTYPE)."""
    return ResponseError(reply.removeprefix("ERR "))


def as_text(value) -> str:
    """An argument as redis-py sends it, read back as ``decode_responses`` gives it."""
    kind = type(value)
    if kind is str:
        return value
    if kind is int or kind is float:
        return repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    raise DataError(f"Invalid input of type: '{kind.__name__}'. Convert to a bytes, string, int or float first.")


def integer(value) -> int:
    """An integer argument, as Redis's ``string2ll`` reads it: ASCII digits, an optional
    minus, no plus, no leading zero, no spaces, 64 bits."""
    if type(value) is int:
        number = value
    else:
        text = as_text(value)
        digits = text[1:] if text.startswith("-") else text
        if not (digits.isascii() and digits.isdigit()) or (digits[0] == "0" and text != "0"):
            raise error(NOT_INTEGER)
        number = int(text)
    if not INT64[0] <= number <= INT64[1]:
        raise error(NOT_INTEGER)
    return number


def double(value, message: str = NOT_FLOAT) -> float:
    """A float argument, as Redis's ``getDoubleFromObject`` reads it: the whole string,
    no leading space, NaN and out-of-range values refused."""
    if type(value) is float or type(value) is int:
        number = float(value)
        text = "inf" if math.isinf(number) else ""
    else:
        text = as_text(value)
        if not text.isascii() or text != text.strip() or "_" in text:
            raise error(message)
        try:
            number = float(text)
        except ValueError:
            raise error(message) from None
    if math.isnan(number) or (math.isinf(number) and "inf" not in text.lower()):
        raise error(message)  # NaN, or past the largest double (ERANGE)
    if number == 0.0 and any(c in "123456789" for c in text.lower().partition("e")[0]):
        raise error(message)  # below the smallest double (ERANGE)
    return number


def bound(value) -> tuple[float, bool]:
    """A ZRANGEBYSCORE bound -> (score, exclusive), as Redis's ``zslParseRange`` reads
    it with ``strtod``: leading spaces and an empty string (0) pass, NaN does not."""
    text = as_text(value)
    exclusive = text.startswith("(")
    number = text[1:] if exclusive else text
    if not number.strip():
        return 0.0, exclusive
    try:
        score = float(number) if number.isascii() and number == number.rstrip() and "_" not in number else math.nan
    except ValueError:
        score = math.nan
    if math.isnan(score):
        raise error("ERR min or max is not a float")
    return score, exclusive


def position(ordered: SortedList, score: float, after: bool) -> int:
    """Where the pairs of ``score`` begin in ``ordered``, or with ``after`` where they end."""
    if after:
        if score == math.inf:
            return len(ordered)
        score = math.nextafter(score, math.inf)
    # A one-element tuple sorts before every (score, member) pair of its score.
    return ordered.bisect_left((score,))


def range_options(options) -> tuple[bool, int, int]:
    """ZRANGEBYSCORE's options -> (withscores, offset, count); count -1 is "all"."""
    withscores, offset, count = False, 0, -1
    i = 0
    while i < len(options):
        word = as_text(options[i]).upper()
        if word == "WITHSCORES":
            withscores = True
            i += 1
        elif word == "LIMIT" and i + 2 < len(options):
            offset, count = integer(options[i + 1]), integer(options[i + 2])
            i += 3
        else:
            raise error("ERR syntax error")
    return withscores, offset, count
