"""Latency and size distributions named in scenario files.

A distribution is written as a one-key mapping, or a bare number for a constant:

    0.002                                  constant
    {constant: 0.002}
    {uniform: [0.001, 0.003]}              low, high
    {exponential: {mean: 600}}
    {lognormal: {median: 20, p95: 45}}     set by the median and the 95th percentile
    {normal: {mean: 20, stddev: 3}}        truncated at zero

``to_spec()`` gives the scenario form back. ``sample(rng)`` takes a ``random.Random``-like stream owned by the caller, so drawing
costs no I/O and each component can keep its own stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: z-score of the 95th percentile of a standard normal.
_Z95 = 1.6448536269514722


@dataclass(frozen=True)
class Constant:
    value: float

    def sample(self, rng) -> float:
        return self.value

    def to_spec(self):
        return {"constant": self.value}

    @property
    def mean(self) -> float:
        return self.value


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def sample(self, rng) -> float:
        return rng.uniform(self.low, self.high)

    def to_spec(self):
        return {"uniform": [self.low, self.high]}

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2


@dataclass(frozen=True)
class Exponential:
    mean: float

    def sample(self, rng) -> float:
        return rng.expovariate(1.0 / self.mean) if self.mean > 0 else 0.0

    def to_spec(self):
        return {"exponential": {"mean": self.mean}}


@dataclass(frozen=True)
class LogNormal:
    median: float
    p95: float

    def sample(self, rng) -> float:
        sigma = math.log(self.p95 / self.median) / _Z95
        return rng.lognormvariate(math.log(self.median), sigma)

    def to_spec(self):
        return {"lognormal": {"median": self.median, "p95": self.p95}}

    @property
    def mean(self) -> float:
        sigma = math.log(self.p95 / self.median) / _Z95
        return self.median * math.exp(sigma * sigma / 2)


@dataclass(frozen=True)
class Normal:
    mean: float
    stddev: float

    def sample(self, rng) -> float:
        return max(0.0, rng.gauss(self.mean, self.stddev))

    def to_spec(self):
        return {"normal": {"mean": self.mean, "stddev": self.stddev}}


Distribution = Constant | Uniform | Exponential | LogNormal | Normal

KINDS = ("constant", "uniform", "exponential", "lognormal", "normal")


def parse(spec) -> Distribution:
    """Build a distribution from its scenario form; ValueError says what is wrong."""
    if isinstance(spec, bool):
        raise ValueError(f"expected a number or a one-key mapping, got {spec!r}")
    if isinstance(spec, (int, float)):
        spec = {"constant": spec}
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(
            "expected a number or a one-key mapping such as {exponential: {mean: 5}}, "
            f"got {spec!r}"
        )
    (kind, params), = spec.items()
    if kind not in KINDS:
        raise ValueError(f"unknown distribution {kind!r}; expected one of: {', '.join(KINDS)}")
    if kind == "constant":
        value = _number(params, "constant")
        _non_negative(value, "constant")
        return Constant(value)
    if kind == "uniform":
        if not isinstance(params, (list, tuple)) or len(params) != 2:
            raise ValueError(f"uniform takes [low, high], got {params!r}")
        low, high = (_number(p, "uniform bound") for p in params)
        _non_negative(low, "uniform low")
        if high < low:
            raise ValueError(f"uniform high {high} is below low {low}")
        return Uniform(low, high)
    if not isinstance(params, dict):
        raise ValueError(f"{kind} takes a mapping of parameters, got {params!r}")
    if kind == "exponential":
        _only(params, {"mean"}, kind)
        mean = _number(params["mean"], "exponential mean")
        _non_negative(mean, "exponential mean")
        return Exponential(mean)
    if kind == "lognormal":
        _only(params, {"median", "p95"}, kind)
        median, p95 = _number(params["median"], "median"), _number(params["p95"], "p95")
        if median <= 0 or p95 <= median:
            raise ValueError(f"lognormal needs 0 < median < p95, got median {median}, p95 {p95}")
        return LogNormal(median, p95)
    if kind == "normal":
        _only(params, {"mean", "stddev"}, kind)
        mean, stddev = _number(params["mean"], "mean"), _number(params["stddev"], "stddev")
        _non_negative(stddev, "normal stddev")
        return Normal(mean, stddev)
    raise AssertionError(kind)  # KINDS and the branches above disagree


def _number(value, what) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _non_negative(value, what):
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value}")


def _only(params: dict, names: set, kind: str):
    if set(params) != names:
        raise ValueError(f"{kind} takes exactly {sorted(names)}, got {sorted(params)}")
