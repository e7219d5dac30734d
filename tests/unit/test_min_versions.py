"""tests/min_versions.sh pins every package the simulator imports at its declared lower bound."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from min_versions import SIM_PACKAGES, lower_bounds, pins


def test_every_simulator_package_has_a_lower_bound_to_pin():
    """Each package the sim imports has a >= bound in pyproject.toml, pinned exactly."""
    bounds = lower_bounds()
    assert pins() == [f"{name}=={bounds[name]}" for name in SIM_PACKAGES]


def test_fakeredis_is_bounded_past_the_hash_seed_dependent_spop():
    """fakeredis before 2.40 gives a fingerprint per PYTHONHASHSEED; the bound excludes it."""
    major, minor = (int(part) for part in lower_bounds()["fakeredis"].split(".")[:2])
    assert (major, minor) >= (2, 40)
