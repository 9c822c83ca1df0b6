"""Bucket allocation and sticky assignment of traffic policies (no server)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.errors import InvalidInput
from registry.policies.allocation import (
    BUCKETS,
    bucket_counts,
    bucket_table,
    fresh_ranges,
    owned,
    reallocate,
)
from registry.policies.spec import parse_policy
from serving.policies import compile_policy, sample_ratio_mismatch


def _compiled(weights, ranges=None, sticky=None, salt="s1"):
    variants = [{"version": i + 1, "weight": w} for i, w in enumerate(weights)]
    ranges = ranges or fresh_ranges(bucket_counts(weights))
    spec = {"variants": variants, "sticky": sticky or {"header": "x-unit-id"}, "shadows": []}
    return compile_policy(
        "production", {"spec": {**spec, "ranges": ranges}, "salt": salt, "revision": 1}
    )


def test_100000_distinct_keys_land_within_one_point_of_90_10():
    policy = _compiled([90, 10])
    counts = [0, 0]
    for i in range(100_000):
        counts[policy.assign(f"customer-{i}")] += 1
    assert abs(counts[1] / 100_000 - 0.10) <= 0.01
    assert abs(counts[0] / 100_000 - 0.90) <= 0.01


def test_the_same_key_gets_the_same_variant_from_independently_compiled_policies():
    a, b = _compiled([50, 50]), _compiled([50, 50])
    keys = [f"u{i}" for i in range(5000)]
    assert [a.assign(k) for k in keys] == [b.assign(k) for k in keys]
    other_salt = _compiled([50, 50], salt="s2")
    assert [a.assign(k) for k in keys] != [other_salt.assign(k) for k in keys]


def test_widening_10_to_25_moves_no_unit_from_the_candidate_back_to_control():
    before_ranges = fresh_ranges(bucket_counts([90, 10]))
    after_ranges = reallocate(before_ranges, bucket_counts([75, 25]))
    before, after = _compiled([90, 10], before_ranges), _compiled([75, 25], after_ranges)
    moved_back = moved_forward = 0
    for i in range(100_000):
        was, now = before.assign(f"k{i}"), after.assign(f"k{i}")
        moved_back += was == 1 and now == 0
        moved_forward += was == 0 and now == 1
    assert moved_back == 0
    assert abs(moved_forward / 100_000 - 0.15) <= 0.01


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 100), min_size=2, max_size=5).filter(lambda w: sum(w) > 0),
    st.data(),
)
def test_a_reallocation_moves_buckets_only_toward_variants_that_grew(weights, data):
    new = data.draw(
        st.lists(st.integers(0, 100), min_size=len(weights), max_size=len(weights)).filter(
            lambda w: sum(w) > 0
        )
    )
    old_ranges = fresh_ranges(bucket_counts(weights))
    new_counts = bucket_counts(new)
    new_ranges = reallocate(old_ranges, new_counts)
    assert owned(new_ranges, len(new)) == new_counts
    old_table, new_table = bucket_table(old_ranges), bucket_table(new_ranges)
    old_counts = bucket_counts(weights)
    for bucket in range(BUCKETS):
        was, now = old_table[bucket], new_table[bucket]
        if was != now:
            assert new_counts[now] > old_counts[now], (bucket, was, now)
            assert new_counts[was] < old_counts[was], (bucket, was, now)


def test_a_dropped_variant_gives_its_buckets_to_the_ones_that_grew():
    old = fresh_ranges(bucket_counts([50, 30, 20]))
    # variant 2 dropped (index -1), the others now 60/40
    previous = [[-1 if i == 2 else i, s, e] for i, s, e in old]
    new = reallocate(previous, bucket_counts([60, 40]))
    assert owned(new, 2) == [6000, 4000]
    table_old, table_new = bucket_table(old), bucket_table(new)
    assert all(table_new[b] == table_old[b] for b in range(BUCKETS) if table_old[b] != 2)


def test_keys_without_a_unit_are_spread_at_random_by_the_weights():
    policy = _compiled([80, 20])
    random.seed(7)
    hits = sum(policy.assign(None) for _ in range(20_000))
    assert abs(hits / 20_000 - 0.2) <= 0.015


def test_sample_ratio_mismatch_flags_a_broken_split_and_not_a_fair_one():
    fair = sample_ratio_mismatch([9_020, 980], (90, 10))
    assert fair["mismatch"] is False and fair["p_value"] > 0.01
    broken = sample_ratio_mismatch([9_500, 500], (90, 10))
    assert broken["mismatch"] is True and broken["p_value"] < 1e-6
    assert sample_ratio_mismatch([10, 2], (90, 10))["p_value"] is None  # too few units


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "variants"),
        ({"variants": []}, "variants"),
        ({"variants": [{"version": 1}]}, "variants[0].weight"),
        ({"variants": [{"version": 0, "weight": 1}]}, "variants[0].version"),
        ({"variants": [{"version": True, "weight": 1}]}, "variants[0].version"),
        ({"variants": [{"version": 1, "weight": -1}]}, "variants[0].weight"),
        ({"variants": [{"version": 1, "weight": 0}]}, "variants"),
        ({"variants": [{"version": 1, "weight": 1}, {"version": 1, "weight": 2}]}, "variants"),
        ({"variants": [{"version": 1, "weight": 1, "x": 1}]}, "variants[0].x"),
        ({"variants": [{"version": 1, "weight": 1}], "sticky": {"cookie": "a"}}, "sticky"),
        ({"variants": [{"version": 1, "weight": 1}], "sticky": {"header": "a b"}}, "sticky.header"),
        (
            {"variants": [{"version": 1, "weight": 1}], "shadows": [{"version": 1}]},
            "shadows[0].version",
        ),
        (
            {"variants": [{"version": 1, "weight": 1}], "shadows": [{"version": 2, "sample": 0}]},
            "shadows[0].sample",
        ),
        (
            {"variants": [{"version": 1, "weight": 1}], "shadows": [{"version": 2, "sample": 2}]},
            "shadows[0].sample",
        ),
        ({"variants": [{"version": 1, "weight": 1}], "canary": {}}, "variants"),
        (
            {
                "variants": [{"version": 1, "weight": 1}, {"version": 2, "weight": 1}],
                "canary": {"steps": [5]},
            },
            "canary.steps",
        ),
        (
            {
                "variants": [{"version": 1, "weight": 1}, {"version": 2, "weight": 1}],
                "canary": {"steps": [50, 25, 100]},
            },
            "canary.steps",
        ),
        (
            {
                "variants": [{"version": 1, "weight": 1}, {"version": 2, "weight": 1}],
                "canary": {"bake_seconds": 0},
            },
            "canary.bake_seconds",
        ),
        (
            {
                "variants": [{"version": 1, "weight": 1}, {"version": 2, "weight": 1}],
                "canary": {"guardrails": {"p95": 1}},
            },
            "canary.guardrails.p95",
        ),
        (
            {
                "variants": [{"version": 1, "weight": 1}, {"version": 2, "weight": 1}],
                "canary": {"colour": 1},
            },
            "canary.colour",
        ),
        ({"variants": [{"version": 1, "weight": 1}], "colour": 1}, "colour"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(body, field):
    with pytest.raises(InvalidInput) as caught:
        parse_policy(body)
    assert field in caught.value.errors, caught.value.errors
