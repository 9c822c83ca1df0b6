"""A variant's counters: the 1-row shortcut agrees with the general path, and answers queued
without a lock are all counted, once."""

from __future__ import annotations

import numpy as np
import pytest

from serving.policies import _Arm


def test_one_row_answers_summarize_like_whole_batches():
    values = np.random.default_rng(3).normal(5.0, 2.0, size=200)
    one_by_one, batched = _Arm(), _Arm()
    for value in values:
        one_by_one.observe(0.001, np.array([value]))  # the shortcut
    for chunk in np.array_split(values, 7):
        batched.observe(0.001, chunk)  # the general path
    a, b = one_by_one.view()["predictions"], batched.view()["predictions"]
    assert a["rows"] == b["rows"] == 200
    assert a["mean"] == pytest.approx(b["mean"], rel=1e-9)
    assert a["std"] == pytest.approx(b["std"], rel=1e-9)
    assert a["mean"] == pytest.approx(float(values.mean()), rel=1e-9)
    assert a["std"] == pytest.approx(float(values.std()), rel=1e-9)


def test_a_one_row_classifier_answer_still_counts_its_class():
    arm = _Arm()
    for label in (1, 1, 0):
        arm.observe(0.001, np.array([label]))
    assert arm.view()["predictions"]["classes"] == {"0": 1, "1": 2}


# ---- PolicyStats: answers queued without a lock, counted at the next fold ---------------------


def _policy(revision: int = 1, canary: bool = False, shadows: tuple = ()):
    from serving.policies import compile_policy

    spec = {
        "variants": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
        "ranges": [[0, 0, 5000], [1, 5000, 10000]],
        "shadows": [{"version": v, "sample": 1.0} for v in shadows],
    }
    if canary:
        spec["canary"] = {"steps": [10]}
        spec["canary_state"] = {"state": "running", "step": 0, "since": 0}
    return compile_policy("production", {"spec": spec, "salt": "s", "revision": revision})


def test_answers_from_many_threads_are_all_counted_exactly():
    import threading

    from serving.policies import FOLD_AT, PolicyStats

    routed: dict[tuple, int] = {}

    def on_route(model, alias, version, outcome, count=1):
        key = (model, alias, version, outcome)
        routed[key] = routed.get(key, 0) + count

    stats = PolicyStats(on_route=on_route)
    policy = _policy()
    per_thread, threads = 3 * FOLD_AT + 17, 8  # folds during the run, and a queued rest
    values = np.random.default_rng(5).normal(size=(threads, per_thread))

    def serve(row: np.ndarray) -> None:
        for i, value in enumerate(row):
            stats.success("m", policy, 1 + i % 2, 0.002, np.array([value]))

    workers = [threading.Thread(target=serve, args=(row,)) for row in values]
    for worker in workers:
        worker.start()
    views = []
    while any(worker.is_alive() for worker in workers):
        views.append(stats.view("m", policy))  # folds while answers are being queued
    for worker in workers:
        worker.join()
    stats.publish()

    view = stats.view("m", policy)
    total = threads * per_thread
    counted = [variant["requests"] for variant in view["variants"]]
    assert sum(counted) == total
    assert routed == {
        ("m", "production", 1, "success"): counted[0],
        ("m", "production", 2, "success"): counted[1],
    }
    first = values[:, 0::2].ravel()  # version 1 got the even positions of every thread
    assert counted[0] == first.size
    assert view["variants"][0]["predictions"]["mean"] == pytest.approx(first.mean(), rel=1e-9)
    assert view["variants"][0]["predictions"]["std"] == pytest.approx(first.std(), rel=1e-9)
    assert view["variants"][0]["latency_seconds"]["p50"] > 0
    assert all(sum(v["requests"] for v in seen["variants"]) <= total for seen in views)


def test_large_and_queued_answers_count_alike():
    from serving.policies import QUEUED_MAX_SIZE, PolicyStats

    stats = PolicyStats()
    policy = _policy()
    small = [np.array([float(i)]) for i in range(10)]
    large = np.arange(QUEUED_MAX_SIZE + 1, dtype=np.float64)  # summarized at once
    for output in small:
        stats.success("m", policy, 1, 0.001, output)
    stats.success("m", policy, 1, 0.001, large)
    variant = stats.view("m", policy)["variants"][0]
    everything = np.concatenate([*small, large])
    assert variant["requests"] == 11
    assert variant["predictions"]["rows"] == everything.size
    assert variant["predictions"]["mean"] == pytest.approx(everything.mean(), rel=1e-12)


def test_a_classifiers_queued_answers_count_their_classes():
    from serving.policies import PolicyStats

    stats = PolicyStats()
    policy = _policy()
    for label in ("a", "b", "a", "a"):
        stats.success("m", policy, 2, 0.001, np.array([label]))
    assert stats.view("m", policy)["variants"][1]["predictions"]["classes"] == {"a": 3, "b": 1}


def test_a_running_canary_drains_its_queued_answers():
    from serving.policies import PolicyStats

    stats = PolicyStats()
    policy = _policy(canary=True)
    for _ in range(5):
        stats.success("m", policy, 2, 0.001, np.array([1.0]))
    stats.failure("m", policy, 2)
    drained = {(d[0], d[1], d[2], d[3]): d[4] for d in stats.drain()}
    assert drained[("m", "production", 1, 2)]["requests"] == 5
    assert drained[("m", "production", 1, 2)]["errors"] == 1
    assert stats.drain() == []  # counted once


def test_answers_queued_under_an_old_revision_are_still_published():
    from serving.policies import PolicyStats

    routed: list[tuple] = []
    stats = PolicyStats(on_route=lambda *args: routed.append(args))
    old, new = _policy(revision=1), _policy(revision=2)
    for _ in range(3):
        stats.success("m", old, 1, 0.001, np.array([1.0]))
    stats.success("m", new, 1, 0.001, np.array([1.0]))  # the new revision starts afresh
    stats.publish()
    assert sorted(routed) == [("m", "production", 1, "success", 4)]
    assert stats.view("m", new)["variants"][0]["requests"] == 1
