"""Order statistics shared by the reports, the figures and the workload's API numbers."""

from __future__ import annotations

import math


def percentile(values, q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
