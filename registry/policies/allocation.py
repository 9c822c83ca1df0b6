"""Weights -> contiguous bucket ranges, so that every process assigns a unit alike.

A unit key hashes into one of BUCKETS buckets; each variant owns some ranges of them. When
weights change, a variant that shrinks gives up buckets from the end of its ranges and only
the variants that grow receive them: a unit never moves except toward a variant that widened.
"""

from __future__ import annotations

from collections.abc import Sequence

BUCKETS = 10_000

# [variant index, first bucket, end bucket (exclusive)], in bucket order
Ranges = list[list[int]]


def bucket_counts(weights: Sequence[float]) -> list[int]:
    """Buckets per variant, proportional to the weights and summing to BUCKETS (largest
    remainders; ties go to the earlier variant)."""
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("the weights must not all be zero")
    exact = [w * BUCKETS / total for w in weights]
    counts = [int(x) for x in exact]
    left = BUCKETS - sum(counts)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return counts


def fresh_ranges(counts: Sequence[int]) -> Ranges:
    """One contiguous range per variant, in the variants' order."""
    ranges: Ranges = []
    start = 0
    for index, count in enumerate(counts):
        if count:
            ranges.append([index, start, start + count])
        start += count
    return ranges


def owned(ranges: Ranges, variants: int) -> list[int]:
    counts = [0] * variants
    for index, start, end in ranges:
        counts[index] += end - start
    return counts


def reallocate(previous: Ranges, counts: Sequence[int]) -> Ranges:
    """`previous` adjusted to `counts` with the fewest moves: shrinking variants release
    buckets from the end of their ranges, growing ones take released buckets in order.
    Ranges of index -1 (a variant the new policy dropped) are all released."""
    if sum(end - start for _, start, end in previous) != BUCKETS:
        return fresh_ranges(counts)
    have = owned([r for r in previous if r[0] >= 0], len(counts))
    excess = [h - c for h, c in zip(have, counts, strict=True)]
    kept: list[list[int]] = []
    released: list[tuple[int, int]] = []
    # Release from the end: walk each variant's ranges backwards.
    for index, start, end in reversed(previous):
        give = end - start if index < 0 else min(max(excess[index], 0), end - start)
        if give:
            excess[index] -= give
            released.append((end - give, end))
            end -= give
        if end > start:
            kept.append([index, start, end])
    kept.reverse()
    released.sort()
    need = [max(c - h, 0) for h, c in zip(have, counts, strict=True)]
    taken: list[list[int]] = []
    for index, want in enumerate(need):
        while want:
            start, end = released[0]
            got = min(want, end - start)
            taken.append([index, start, start + got])
            want -= got
            if start + got == end:
                released.pop(0)
            else:
                released[0] = (start + got, end)
    return _merged(sorted(kept + taken, key=lambda r: r[1]))


def _merged(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for index, start, end in ranges:
        if out and out[-1][0] == index and out[-1][2] == start:
            out[-1][2] = end
        else:
            out.append([index, start, end])
    return out


def bucket_table(ranges: Ranges) -> bytes:
    """bucket -> variant index, for an O(1) lookup per request (at most 255 variants)."""
    table = bytearray(BUCKETS)
    for index, start, end in ranges:
        table[start:end] = bytes([index]) * (end - start)
    return bytes(table)
