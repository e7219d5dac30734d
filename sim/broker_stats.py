"""Per-queue statistics of the sim broker (sim/broker.py): counters, depths, queue waits."""

from __future__ import annotations


def queue_stats(queues: dict) -> dict[str, dict]:
    """Per queue counters, current and peak depth, and queue-wait statistics
    (seconds from enqueued_at to the broker choosing a consumer; None when the
    queue never delivered). ``queues``: name -> the broker's queue record."""
    out = {}
    for name, q in queues.items():
        waits = sorted(q.waits)
        n = len(waits)
        out[name] = {
            "published": q.published,
            "delivered": q.delivered,
            "acked": q.acked,
            "redelivered": q.redelivered,
            "requeued": q.requeued,
            "dropped": q.dropped,
            "lost": q.lost,
            "depth": len(q.ready),
            "unacked": q.unacked,
            "peak_depth": q.peak_depth,
            "consumers": len(q.consumers),
            "wait_mean": (sum(waits) / n) if n else None,
            "wait_p50": quantile(waits, 0.50),
            "wait_p95": quantile(waits, 0.95),
            "wait_max": waits[-1] if n else None,
        }
    return out


def quantile(sorted_values, p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None if empty."""
    n = len(sorted_values)
    if not n:
        return None
    pos = p * (n - 1)
    lo = int(pos)
    if lo + 1 >= n:
        return sorted_values[-1]
    return sorted_values[lo] + (sorted_values[lo + 1] - sorted_values[lo]) * (pos - lo)
