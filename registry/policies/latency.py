"""Fixed latency buckets for per-variant counts: constant memory, and counts from several
processes add up bucket by bucket."""

from __future__ import annotations

import math
from collections.abc import Sequence

LATENCY_BOUNDS = tuple(0.00005 * 1.25**i for i in range(60))  # 50 µs .. ~30 s, 25% apart
BUCKETS = len(LATENCY_BOUNDS) + 1  # the last one is "slower than every bound"


def quantile(counts: Sequence[int], q: float) -> float | None:
    """The upper bound of the bucket holding quantile `q` (None without observations)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return LATENCY_BOUNDS[i] if i < len(LATENCY_BOUNDS) else math.inf
    return math.inf
