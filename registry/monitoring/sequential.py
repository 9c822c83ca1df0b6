"""An outcome comparison of two variants that stays valid when watched continuously.

The mixture sequential probability ratio test (mSPRT; Robbins 1970, Johari, Pekelis and
Walsh, "Always valid inference", 2017) for the difference of two means, with a normal
mixture of variance tau^2 over the alternative. With delta the candidate's mean minus the
control's and s^2 its variance estimate (var_a / n_a + var_b / n_b):

    Lambda = sqrt(s^2 / (s^2 + tau^2)) * exp(tau^2 delta^2 / (2 s^2 (s^2 + tau^2)))

1 / Lambda is a p-value valid at any stopping time (its running minimum is kept), and the
values of the difference it does not reject form a confidence sequence:

    delta +- sqrt(s^2 (s^2 + tau^2) / tau^2 * (2 log(1/alpha) + log((s^2 + tau^2) / s^2)))

So a dashboard may look after every label and the chance of a false "better" or "worse"
stays below alpha, which a fixed-horizon test checked repeatedly does not give.
The per-row outcome is a loss (squared error, log loss, 0/1 error: lower is better) or a
gain (accuracy: higher is better); `lower_is_better` says which.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

MIN_PER_ARM = 30  # below this the variance estimate is too rough to judge


@dataclass(frozen=True, slots=True)
class ArmStats:
    n: int
    mean: float
    var: float  # sample variance of the per-row outcome

    @classmethod
    def of(cls, values: list[float]) -> ArmStats:
        n = len(values)
        if n == 0:
            return cls(0, 0.0, 0.0)
        mean = math.fsum(values) / n
        var = math.fsum((v - mean) ** 2 for v in values) / max(n - 1, 1)
        return cls(n, mean, var)


@dataclass(frozen=True, slots=True)
class Comparison:
    verdict: str  # "better" | "worse" | "inconclusive" (the candidate against the control)
    difference: float  # candidate mean - control mean
    ci_low: float
    ci_high: float
    p_value: float  # always valid; the running minimum when a test object is used
    n_control: int
    n_candidate: int


def compare(
    control: ArmStats,
    candidate: ArmStats,
    *,
    alpha: float = 0.05,
    tau: float | None = None,
    lower_is_better: bool = True,
) -> Comparison:
    """One look at the data (a stateless p-value; `SequentialTest` keeps its minimum)."""
    if control.n < MIN_PER_ARM or candidate.n < MIN_PER_ARM:
        return Comparison("inconclusive", 0.0, -math.inf, math.inf, 1.0, control.n, candidate.n)
    delta = candidate.mean - control.mean
    s2 = control.var / control.n + candidate.var / candidate.n
    if s2 <= 0:
        s2 = 1e-300
    if tau is None:  # aim the mixture at a tenth of a standard deviation of the outcome
        pooled = math.sqrt((control.var + candidate.var) / 2)
        tau = 0.1 * pooled if pooled > 0 else 1.0
    t2 = tau * tau
    log_lambda = 0.5 * math.log(s2 / (s2 + t2)) + t2 * delta * delta / (2 * s2 * (s2 + t2))
    p = min(1.0, math.exp(-log_lambda)) if log_lambda < 700 else 0.0
    half = math.sqrt(s2 * (s2 + t2) / t2 * (2 * math.log(1 / alpha) + math.log((s2 + t2) / s2)))
    verdict = "inconclusive"
    if p <= alpha:
        improved = delta < 0 if lower_is_better else delta > 0
        verdict = "better" if improved else "worse"
    return Comparison(verdict, delta, delta - half, delta + half, p, control.n, candidate.n)


class SequentialTest:
    """Looks repeatedly; the p-value is the running minimum and the first decisive verdict
    stands (stopping at it is what keeps the error rate below alpha)."""

    def __init__(
        self, *, alpha: float = 0.05, tau: float | None = None, lower_is_better: bool = True
    ):
        self.alpha = alpha
        self.tau = tau
        self.lower_is_better = lower_is_better
        self.p_value = 1.0
        self.decided: Comparison | None = None

    def look(self, control: ArmStats, candidate: ArmStats) -> Comparison:
        if self.decided is not None:
            return self.decided
        if self.tau is None and min(control.n, candidate.n) >= MIN_PER_ARM:
            # Fixed at the first look that can judge: the mixture must not follow the data.
            pooled = math.sqrt((control.var + candidate.var) / 2)
            self.tau = 0.1 * pooled if pooled > 0 else 1.0
        result = compare(
            control,
            candidate,
            alpha=self.alpha,
            tau=self.tau,
            lower_is_better=self.lower_is_better,
        )
        self.p_value = min(self.p_value, result.p_value)
        result = Comparison(
            result.verdict,
            result.difference,
            result.ci_low,
            result.ci_high,
            self.p_value,
            result.n_control,
            result.n_candidate,
        )
        if result.verdict != "inconclusive":
            self.decided = result
        return result


class _Running:
    """Count, mean and sum of squared deviations (Welford), one value at a time."""

    __slots__ = ("m2", "mean", "n")

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, value: float) -> None:
        self.n += 1
        step = value - self.mean
        self.mean += step / self.n
        self.m2 += step * (value - self.mean)

    def stats(self) -> ArmStats:
        return ArmStats(self.n, self.mean, self.m2 / max(self.n - 1, 1))


def walk(
    outcomes: Iterable[tuple[int, float]],
    *,
    alpha: float = 0.05,
    lower_is_better: bool = True,
) -> Comparison:
    """Replay (arm, outcome) pairs in the order they became known (arm 0 the control, 1
    the candidate), looking after each one, as a dashboard watching every label would.

    The verdict is the first decisive one (it stands), the p-value the running minimum, and
    the interval the running intersection of the confidence sequence (valid at every time
    at once, so it only narrows). Replaying from the stored rows makes the answer the same
    in every process, with nothing to keep between looks."""
    arms = (_Running(), _Running())
    test = SequentialTest(alpha=alpha, lower_is_better=lower_is_better)
    low, high = -math.inf, math.inf
    for arm, value in outcomes:
        arms[arm].add(value)
        if min(arms[0].n, arms[1].n) < MIN_PER_ARM:
            continue
        control, candidate = arms[0].stats(), arms[1].stats()
        if test.decided is None:  # the look computes this look's interval too
            current = test.look(control, candidate)
        else:  # decided: the look would answer the decision; the interval still narrows
            current = compare(
                control, candidate, alpha=alpha, tau=test.tau, lower_is_better=lower_is_better
            )
        low, high = max(low, current.ci_low), min(high, current.ci_high)
    final = compare(
        arms[0].stats(), arms[1].stats(), alpha=alpha, tau=test.tau, lower_is_better=lower_is_better
    )
    verdict = test.decided.verdict if test.decided is not None else "inconclusive"
    return replace(
        final,
        verdict=verdict,
        ci_low=low,
        ci_high=high,
        p_value=test.p_value,
    )
