"""The field types every part of the scenario schema shares: bounded numbers, names,
distributions, and the strict base model (no extra keys, frozen, no inf or nan)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator

from common import distributions
from common.scenario_bounds import (
    MAX_MEMORY_MB,
    MAX_QUOTA,
    MAX_SECONDS,
    MAX_VCPUS,
    MAX_WEIGHT,
    MAX_WORKERS,
    typical_high,
)


def _distribution(value):
    if not isinstance(value, distributions.Distribution.__args__):
        value = distributions.parse(value)
    if typical_high(value) > MAX_SECONDS:
        raise ValueError(f"values up to {typical_high(value):g} s are past the bound of {MAX_SECONDS:g} s (30 days)")
    return value


Dist = Annotated[
    distributions.Distribution,
    PlainValidator(_distribution),
    PlainSerializer(lambda d: d.to_spec()),
]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(gt=0.0, le=MAX_SECONDS)]
Workers = Annotated[int, Field(gt=0, le=MAX_WORKERS)]
Vcpus = Annotated[int, Field(gt=0, le=MAX_VCPUS)]
MemoryMb = Annotated[int, Field(gt=0, le=MAX_MEMORY_MB)]
QuotaCount = Annotated[int, Field(ge=0, le=MAX_QUOTA)]
Weight = Annotated[float, Field(gt=0.0, le=MAX_WEIGHT)]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]
Text = Annotated[str, Field(max_length=200)]


class Model(BaseModel):
    # No inf or nan anywhere: an infinite weight or duration validates but cannot run.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)


