"""The registry's use cases against the in-memory unit of work (tests/unit/fakes.py): no
database, the services' real rules."""

from __future__ import annotations

import pytest

from registry.changes import AliasMoved, ModelRemoved, VersionRemoved, VersionStatusChanged
from registry.errors import AlreadyExists, Conflict, NotFound
from registry.names import Reference
from registry.pagination import Page, make_page
from registry.services import aliases, events, models, versions
from storage.local import LocalArtifactStore
from tests.unit.fakes import FakeUnitOfWorkFactory

ACTOR = "tester"


@pytest.fixture
def uow() -> FakeUnitOfWorkFactory:
    return FakeUnitOfWorkFactory()


@pytest.fixture
def store(tmp_path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "store")


@pytest.fixture
def register(uow, store):
    """register(name, content=...) -> VersionRecord, through the real service."""

    def _register(name: str, content: bytes = b"model bytes", **meta) -> versions.VersionRecord:
        staged = store.stage()
        staged.write(content)
        return versions.register_version(
            uow,
            store,
            lambda path, fmt: None,  # nothing to inspect: these bytes are never loaded
            name=name,
            staged=staged,
            meta=versions.NewVersion(format="joblib", **meta),
            actor=ACTOR,
        )

    return _register


def _page(limit: int, cursor: str | None, key_type: type) -> Page:
    return make_page(limit, cursor, default=limit, maximum=100, key_type=key_type)


def _events(uow, name: str) -> list:
    return events.list_events(uow, name, Page(limit=100)).items


# ---- numbering and creation ----------------------------------------------------------------


def test_version_numbers_are_sequential_per_model_and_never_reused(uow, register):
    assert [register("a").version for _ in range(3)] == [1, 2, 3]
    assert register("b").version == 1
    versions.delete_version(uow, "a", Reference(version=3), actor=ACTOR)
    assert register("a").version == 4


def test_a_recreated_model_continues_its_numbering(uow, register):
    register("a")
    register("a")
    models.delete_model(uow, "a", actor=ACTOR)
    with pytest.raises(NotFound):
        models.get_model(uow, "a")
    models.create_model(uow, "a", actor=ACTOR)
    assert register("a").version == 3


def test_creating_an_existing_model_is_refused(uow):
    models.create_model(uow, "a", description="first", actor=ACTOR)
    with pytest.raises(AlreadyExists):
        models.create_model(uow, "a", description="second", actor=ACTOR)
    assert models.get_model(uow, "a").description == "first"
    assert [e.type for e in _events(uow, "a")] == ["create"]


def test_registering_the_same_bytes_twice_makes_two_versions(uow, register):
    # Content addressing dedupes the blob, not the version: a re-registration is a new one.
    first, second = register("a"), register("a")
    assert (first.version, second.version) == (1, 2)
    assert first.sha256 == second.sha256


def test_registration_creates_the_model_and_moves_latest(uow, register):
    record = register("a", description="d")
    assert models.get_model(uow, "a").latest_version == record.version
    assert [e.type for e in _events(uow, "a")] == ["register", "create"]
    assert uow.delivered == [AliasMoved("a", "latest")]
    assert uow.tables.pending == []  # the in-flight marker went with the commit


# ---- promotion and rollback ----------------------------------------------------------------


def test_promote_with_a_stale_expectation_is_refused_and_changes_nothing(uow, register):
    register("a")
    register("a")
    aliases.promote_version(uow, "a", 1, alias="prod", expected_version=None, actor=ACTOR)
    delivered = list(uow.delivered)
    with pytest.raises(Conflict, match="expected version 2"):
        aliases.promote_version(uow, "a", 2, alias="prod", expected_version=2, actor=ACTOR)
    with pytest.raises(Conflict, match="expected absent"):
        aliases.promote_version(uow, "a", 2, alias="prod", expected_version=None, actor=ACTOR)
    assert models.get_model(uow, "a").aliases == {"prod": 1}
    assert uow.delivered == delivered  # a refused move announces nothing
    move = aliases.promote_version(uow, "a", 2, alias="prod", expected_version=1, actor=ACTOR)
    assert (move.version, move.previous_version) == (2, 1)
    assert models.get_model(uow, "a").aliases == {"prod": 2}


def test_only_ready_versions_can_be_promoted(uow, register):
    register("a")
    register("a")
    versions.update_version(uow, "a", Reference(version=1), status="archived", actor=ACTOR)
    with pytest.raises(Conflict, match="archived"):
        aliases.promote_version(uow, "a", 1, actor=ACTOR)


def test_the_check_runs_before_the_alias_moves(uow, register):
    register("a")
    checked = []

    def refuse(record):
        checked.append(record.version)
        raise Conflict("refused by the check")

    with pytest.raises(Conflict):
        aliases.promote_version(uow, "a", 1, actor=ACTOR, check=refuse)
    assert checked == [1]
    assert models.get_model(uow, "a").aliases == {}


def test_rollback_returns_to_the_previous_version_and_is_audited(uow, register):
    for _ in range(3):
        register("a")
    for number in (1, 2, 3):
        aliases.promote_version(uow, "a", number, actor=ACTOR)
    move = aliases.rollback_alias(uow, "a", "production", reason="bad", actor=ACTOR)
    assert (move.version, move.previous_version) == (2, 3)
    event = _events(uow, "a")[0]
    assert (event.type, event.alias, event.reason) == ("rollback", "production", "bad")
    assert (event.before, event.after) == (
        {"version": 3},
        {"version": 2, "check": {"performed": False}},
    )
    # Successive rollbacks walk back through history, then stop at the first promotion.
    assert aliases.rollback_alias(uow, "a", "production", actor=ACTOR).version == 1
    with pytest.raises(Conflict, match="no earlier version"):
        aliases.rollback_alias(uow, "a", "production", actor=ACTOR)
    assert models.get_model(uow, "a").aliases == {"production": 1}


def test_rollback_with_expected_version_is_a_compare_and_set(uow, register):
    for _ in range(3):
        register("a")
    for number in (1, 2, 3):
        aliases.promote_version(uow, "a", number, actor=ACTOR)
    assert aliases.rollback_target(uow, "a", "production") == 2
    with pytest.raises(Conflict, match="is at version 3, expected version 2; not rolled back"):
        aliases.rollback_alias(uow, "a", "production", actor=ACTOR, expected_version=2)
    assert models.get_model(uow, "a").aliases == {"production": 3}
    assert _events(uow, "a")[0].type == "promote"  # the refusal recorded nothing
    move = aliases.rollback_alias(uow, "a", "production", actor=ACTOR, expected_version=3)
    assert move.version == 2
    assert aliases.rollback_target(uow, "a", "production") == 1


def test_rollback_to_a_deleted_version_is_refused(uow, register):
    register("a")
    register("a")
    aliases.promote_version(uow, "a", 1, actor=ACTOR)
    aliases.promote_version(uow, "a", 2, alias="staging", actor=ACTOR)
    aliases.promote_version(uow, "a", 2, actor=ACTOR)
    aliases.promote_version(uow, "a", 1, alias="staging", actor=ACTOR)
    aliases.delete_alias(uow, "a", "staging", actor=ACTOR)
    versions.delete_version(uow, "a", Reference(version=1), actor=ACTOR)
    with pytest.raises(Conflict, match="has been deleted"):
        aliases.rollback_alias(uow, "a", "production", actor=ACTOR)


def test_an_unknown_alias_cannot_be_rolled_back(uow, register):
    register("a")
    with pytest.raises(NotFound):
        aliases.rollback_alias(uow, "a", "production", actor=ACTOR)


# ---- deletion and archiving ----------------------------------------------------------------


def test_an_aliased_version_cannot_be_deleted_or_archived(uow, register):
    register("a")
    aliases.promote_version(uow, "a", 1, actor=ACTOR)
    with pytest.raises(Conflict, match="aliased as production"):
        versions.delete_version(uow, "a", Reference(version=1), actor=ACTOR)
    with pytest.raises(Conflict, match="aliased as production"):
        versions.update_version(
            uow, "a", Reference(version=1), description="new", status="archived", actor=ACTOR
        )
    record = versions.get_version(uow, "a", Reference(version=1))
    assert (record.status, record.description) == ("ready", "")  # the edit rolled back too
    aliases.delete_alias(uow, "a", "production", actor=ACTOR)
    versions.delete_version(uow, "a", Reference(version=1), actor=ACTOR)
    with pytest.raises(NotFound):
        versions.get_version(uow, "a", Reference(version=1))
    assert [e.type for e in _events(uow, "a")][:2] == ["delete_version", "delete_alias"]


def test_a_model_with_aliases_cannot_be_deleted(uow, register):
    register("a")
    aliases.promote_version(uow, "a", 1, actor=ACTOR)
    with pytest.raises(Conflict, match="still has aliases"):
        models.delete_model(uow, "a", actor=ACTOR)
    assert models.get_model(uow, "a").aliases == {"production": 1}


def test_archiving_moves_latest(uow, register):
    register("a")
    register("a")
    versions.update_version(uow, "a", Reference(version=2), status="archived", actor=ACTOR)
    assert versions.get_version(uow, "a", Reference(latest=True)).version == 1
    assert uow.delivered[-2:] == [AliasMoved("a", "latest"), VersionStatusChanged("a", 2)]


# ---- pagination ----------------------------------------------------------------------------


def test_models_page_by_name_with_cursors(uow):
    for name in ("e", "c", "a", "d", "b"):
        models.create_model(uow, name, actor=ACTOR)
    seen, cursor, pages = [], None, 0
    while True:
        result = models.list_models(uow, _page(2, cursor, str))
        seen += [m.name for m in result.items]
        pages += 1
        cursor = result.next_cursor
        if cursor is None:
            break
    assert (seen, pages) == (["a", "b", "c", "d", "e"], 3)


def test_an_exactly_full_last_page_has_no_cursor(uow):
    for name in ("a", "b"):
        models.create_model(uow, name, actor=ACTOR)
    assert models.list_models(uow, _page(2, None, str)).next_cursor is None


def test_versions_and_events_page_newest_first(uow, register):
    for _ in range(5):
        register("a")
    first = versions.list_versions(uow, "a", _page(2, None, int))
    assert [v.version for v in first.items] == [5, 4]
    second = versions.list_versions(uow, "a", _page(2, first.next_cursor, int))
    assert [v.version for v in second.items] == [3, 2]
    trail = events.list_events(uow, "a", _page(3, None, int), type_="register")
    assert [e.version for e in trail.items] == [5, 4, 3]
    rest = events.list_events(uow, "a", _page(3, trail.next_cursor, int), type_="register")
    assert ([e.version for e in rest.items], rest.next_cursor) == ([2, 1], None)


def test_aliases_page_by_name(uow, register):
    register("a")
    for alias in ("prod", "canary", "staging"):
        aliases.promote_version(uow, "a", 1, alias=alias, actor=ACTOR)
    first = aliases.list_aliases(uow, "a", _page(2, None, str))
    assert [a.alias for a in first.items] == ["canary", "prod"]
    rest = aliases.list_aliases(uow, "a", _page(2, first.next_cursor, str))
    assert ([a.alias for a in rest.items], rest.next_cursor) == (["staging"], None)


# ---- changes announced after commit --------------------------------------------------------


def test_each_use_case_announces_what_it_changed(uow, register):
    register("a")
    register("a")
    aliases.promote_version(uow, "a", 1, actor=ACTOR)
    aliases.promote_version(uow, "a", 2, actor=ACTOR)
    aliases.rollback_alias(uow, "a", "production", actor=ACTOR)
    aliases.delete_alias(uow, "a", "production", actor=ACTOR)
    versions.delete_version(uow, "a", Reference(version=2), actor=ACTOR)
    models.delete_model(uow, "a", actor=ACTOR)
    assert uow.delivered == [
        AliasMoved("a", "latest"),
        AliasMoved("a", "latest"),
        AliasMoved("a", "production"),
        AliasMoved("a", "production"),
        AliasMoved("a", "production"),
        AliasMoved("a", "production"),
        VersionRemoved("a", 2),
        ModelRemoved("a"),
    ]


def test_changes_are_delivered_only_after_the_commit(uow, register):
    register("a")
    heard = []

    def listener(change):
        heard.append((change, uow.commits))  # how many commits had happened by then

    uow.subscribe(listener)
    commits_before = uow.commits
    aliases.promote_version(uow, "a", 1, actor=ACTOR)
    assert heard == [(AliasMoved("a", "production"), commits_before + 1)]


def test_a_failed_commit_delivers_nothing(uow, register):
    register("a")
    delivered = list(uow.delivered)
    uow.fail_commits = True
    with pytest.raises(RuntimeError):
        versions.delete_version(uow, "a", Reference(version=1), actor=ACTOR)
    uow.fail_commits = False
    assert uow.delivered == delivered
    assert versions.get_version(uow, "a", Reference(version=1)).version == 1


def test_a_failing_listener_neither_fails_the_use_case_nor_silences_the_others(uow, register):
    register("a")

    def broken(change):
        raise RuntimeError("listener bug")

    later = []
    uow.subscribe(broken)
    uow.subscribe(later.append)
    move = aliases.promote_version(uow, "a", 1, actor=ACTOR)
    assert move.version == 1
    assert later == [AliasMoved("a", "production")]
    assert models.get_model(uow, "a").aliases == {"production": 1}


def test_leaving_a_unit_of_work_without_commit_announces_nothing(uow):
    with uow(write=True) as work:
        work.announce(ModelRemoved("a"))
    with uow(write=True) as work:
        work.announce(ModelRemoved("b"))
        work.rollback()
        work.commit()
    assert uow.delivered == []
