"""The sequential outcome comparison, by simulation: watched after every batch of labels,
an A/A test stays inconclusive in at least 95% of 200 runs, and a candidate truly better by
a set margin reaches "better"."""

from __future__ import annotations

import numpy as np
import pytest

from registry.monitoring.sequential import ArmStats, SequentialTest, compare, walk

LOOKS = 40
BATCH = 50  # labels per arm between looks: 2,000 per arm in all


def _run(rng, margin: float, *, lower_is_better: bool = True) -> tuple[str, int]:
    """Stream squared-error-like outcomes; the verdict and the look it came at."""
    test = SequentialTest(alpha=0.05, lower_is_better=lower_is_better)
    control = rng.normal(1.0, 1.0, BATCH * LOOKS)
    candidate = rng.normal(1.0 - margin, 1.0, BATCH * LOOKS)
    for look in range(1, LOOKS + 1):
        n = look * BATCH
        result = test.look(_stats(control[:n]), _stats(candidate[:n]))
        if result.verdict != "inconclusive":
            return result.verdict, look
    return "inconclusive", LOOKS


def _stats(values: np.ndarray) -> ArmStats:
    return ArmStats(len(values), float(values.mean()), float(values.var(ddof=1)))


def test_an_aa_test_watched_continuously_stays_inconclusive_in_95_percent_of_200_runs():
    rng = np.random.default_rng(2026)
    verdicts = [_run(rng, 0.0)[0] for _ in range(200)]
    assert verdicts.count("inconclusive") >= 190, verdicts.count("inconclusive")


def test_a_truly_better_candidate_reaches_better_and_never_worse():
    rng = np.random.default_rng(7)
    results = [_run(rng, 0.2) for _ in range(50)]
    verdicts = [v for v, _ in results]
    assert "worse" not in verdicts
    assert verdicts.count("better") >= 45
    assert np.median([look for _, look in results]) < LOOKS


def test_higher_is_better_outcomes_flip_the_verdict():
    rng = np.random.default_rng(3)
    assert _run(rng, 0.3, lower_is_better=False)[0] == "worse"


def test_the_confidence_interval_covers_the_true_difference_and_shrinks():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.0, 1.0, 20_000), rng.normal(0.05, 1.0, 20_000)
    small = compare(_stats(a[:500]), _stats(b[:500]), tau=0.1)
    large = compare(_stats(a), _stats(b), tau=0.1)
    assert small.ci_low <= 0.05 <= small.ci_high
    assert large.ci_low <= 0.05 <= large.ci_high
    assert large.ci_high - large.ci_low < small.ci_high - small.ci_low


def test_too_few_rows_are_inconclusive():
    result = compare(ArmStats(10, 1.0, 1.0), ArmStats(10, 0.0, 1.0))
    assert result.verdict == "inconclusive" and result.p_value == pytest.approx(1.0)


def test_arm_stats_of_values():
    stats = ArmStats.of([1.0, 2.0, 3.0])
    assert (stats.n, stats.mean) == (3, 2.0)
    assert stats.var == pytest.approx(1.0, abs=1e-12)


def _interleaved(rng, margin: float, n: int = 1_000) -> list[tuple[int, float]]:
    """Outcomes of both arms arriving in a random order, one label at a time."""
    arms = rng.integers(0, 2, 2 * n)
    values = rng.normal(1.0, 1.0, 2 * n) - margin * arms
    return list(zip(arms.tolist(), values.tolist(), strict=True))


def test_replaying_every_label_keeps_an_aa_test_inconclusive_in_95_percent_of_200_runs():
    rng = np.random.default_rng(2027)
    verdicts = [walk(_interleaved(rng, 0.0)).verdict for _ in range(200)]
    assert verdicts.count("inconclusive") >= 190, verdicts.count("inconclusive")


def test_replaying_finds_a_truly_better_candidate_and_its_interval_covers_the_margin():
    rng = np.random.default_rng(11)
    results = [walk(_interleaved(rng, 0.25)) for _ in range(40)]
    assert [r.verdict for r in results].count("better") >= 36
    assert "worse" not in [r.verdict for r in results]
    covered = [r.ci_low <= -0.25 <= r.ci_high for r in results]
    assert sum(covered) >= 36  # the running intersection is a 95% confidence sequence
    assert all(r.ci_high - r.ci_low < 1.0 for r in results)


def test_a_replay_is_the_same_whoever_looks_and_stands_once_decided():
    rng = np.random.default_rng(12)
    outcomes = _interleaved(rng, 0.5)
    first, again = walk(outcomes), walk(list(outcomes))
    assert first == again and first.verdict == "better"
    # a later run of bad luck for the candidate does not revoke the verdict
    later = walk(outcomes + [(1, 3.0)] * 30)
    assert later.verdict == "better" and later.p_value == first.p_value


def test_a_replay_with_too_few_labels_per_arm_is_inconclusive():
    result = walk([(0, 1.0)] * 500 + [(1, 0.0)] * 29)
    assert result.verdict == "inconclusive" and result.p_value == 1.0
    assert result.ci_low == -np.inf and result.ci_high == np.inf
