"""Alias history from audit events, and the comparison rows (pure functions, no database)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from registry.records import EventRecord, VersionRecord
from registry.ui.compare import compare_versions
from registry.ui.history import alias_steps, timelines, version_on


def _event(
    id_: int, kind: str, at: datetime, version: int | None, before: int | None
) -> EventRecord:
    return EventRecord(
        id=id_,
        model="m",
        type=kind,
        at=at,
        actor="ops",
        reason=f"r{id_}",
        version=version,
        alias="production",
        before={"version": before},
        after={"version": version},
    )


EVENTS = [  # newest first, as the audit trail lists them
    _event(4, "delete_alias", datetime(2026, 3, 10, 9, tzinfo=UTC), None, 1),
    _event(3, "rollback", datetime(2026, 3, 5, 23, 59, tzinfo=UTC), 1, 2),
    _event(2, "promote", datetime(2026, 3, 5, 8, tzinfo=UTC), 2, 1),
    _event(1, "promote", datetime(2026, 3, 1, 12, tzinfo=UTC), 1, None),
    _event(0, "register", datetime(2026, 2, 28, tzinfo=UTC), 1, None),
]


def test_which_version_on_a_day_is_the_state_at_its_end():
    steps = alias_steps(EVENTS)
    assert [s.kind for s in steps] == ["promote", "promote", "rollback", "delete_alias"]
    assert version_on(steps, "production", date(2026, 2, 28)) is None
    assert version_on(steps, "production", date(2026, 3, 1)) == 1
    assert version_on(steps, "production", date(2026, 3, 4)) == 1
    assert version_on(steps, "production", date(2026, 3, 5)) == 1  # rolled back that night
    assert version_on(steps, "production", date(2026, 3, 9)) == 1
    assert version_on(steps, "production", date(2026, 3, 10)) is None  # deleted
    assert version_on(steps, "staging", date(2026, 3, 5)) is None


def test_timelines_read_newest_first():
    lines = timelines(alias_steps(EVENTS))
    assert [s.version for s in lines["production"]] == [None, 1, 2, 1]


def _version(number: int, metrics: dict[str, float], **extra) -> VersionRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    fields = dict(
        name="m",
        version=number,
        status="ready",
        format="skops",
        sha256=f"{number:064d}",
        size=10,
        artifact_key="k",
        description="",
        tags={},
        metrics=metrics,
        params={},
        source={},
        input_example=None,
        signature={"n_features": 3},
        created_at=now,
        created_by="a",
        updated_at=now,
    )
    fields.update(extra)
    return VersionRecord(**fields)


def test_compare_marks_only_the_fields_that_differ():
    rows = compare_versions(
        [
            _version(1, {"rmse": 0.5, "mae": 0.1}, source={"run": "a"}),
            _version(2, {"rmse": 0.5000001, "mae": 0.1}, source={"run": "b"}),
            _version(3, {"mae": 0.1}, source={"run": "a"}),
        ]
    )
    by_key = {(r.section, r.key): r for r in rows}
    assert by_key["metrics", "mae"].differs is False
    assert by_key["metrics", "rmse"].values == ("0.5", "0.5", "")  # 6 significant digits
    assert by_key["metrics", "rmse"].differs is True  # one version has no rmse
    assert by_key["lineage", "run"].differs is True
    assert by_key["signature", "n_features"].differs is False
    assert by_key["record", "sha256"].differs is True
