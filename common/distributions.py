"""Latency and size distributions named in scenario files.

A distribution is written as a one-key mapping, or a bare number for a constant:

    0.002                                  constant
    {constant: 0.002}
    {uniform: [0.001, 0.003]}              low, high
    {exponential: {mean: 600}}
    {lognormal: {median: 20, p95: 45}}     set by the median and the 95th percentile
    {normal: {mean: 20, stddev: 3}}        truncated at zero
    {empirical: [0.1, 0.2, 0.3, 0.9]}      quantiles at evenly spaced probabilities 0..1
                                           (here 0, 1/3, 2/3, 1), linearly interpolated

``to_spec()`` gives the scenario form back. ``sample(rng)`` takes a ``random.Random``-like stream owned by the caller, so drawing
costs no I/O and each component can keep its own stream.
"""

from __future__ import annotations

import itertools
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


#: Most quantiles an empirical distribution may list: a calibration writes 101 (every
#: percentile); a thousand keeps a scenario file readable and a draw cheap.
MAX_QUANTILES = 1001


@dataclass(frozen=True)
class Empirical:
    """A distribution measured rather than assumed: ``quantiles[i]`` is the value at
    probability ``i / (len - 1)``; a draw interpolates linearly between two neighbours,
    so it never leaves [first, last] and needs one uniform number from the stream."""

    quantiles: tuple[float, ...]

    def sample(self, rng) -> float:
        position = rng.random() * (len(self.quantiles) - 1)
        index = min(int(position), len(self.quantiles) - 2)
        low, high = self.quantiles[index], self.quantiles[index + 1]
        return low + (high - low) * (position - index)

    def to_spec(self):
        return {"empirical": list(self.quantiles)}

    @property
    def mean(self) -> float:
        # The mean of the piecewise-linear quantile function: trapezoids of equal width.
        q = self.quantiles
        return sum((a + b) / 2 for a, b in itertools.pairwise(q)) / (len(q) - 1)


Distribution = Constant | Uniform | Exponential | LogNormal | Normal | Empirical

KINDS = ("constant", "uniform", "exponential", "lognormal", "normal", "empirical")


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
    if kind == "empirical":
        return _empirical(params)
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


def _empirical(params) -> Empirical:
    if not isinstance(params, (list, tuple)) or not 2 <= len(params) <= MAX_QUANTILES:
        raise ValueError(f"empirical takes a list of 2 to {MAX_QUANTILES} quantiles "
                         f"(values at evenly spaced probabilities from 0 to 1), got {params!r}")
    values = tuple(_number(v, f"empirical quantile {i}") for i, v in enumerate(params))
    _non_negative(values[0], "empirical quantile 0")
    for i, (a, b) in enumerate(itertools.pairwise(values), start=1):
        if b < a:
            raise ValueError(f"empirical quantiles must not decrease: quantile {i} is {b}, below {a}")
    return Empirical(values)


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
