"""The `modelreg` command line, on the embedded default (a fresh MODELREG_HOME per test)."""

from __future__ import annotations

import re

import pytest
import skops.io
from click.testing import CliRunner

from manage import cli
from tests.conftest import fit_linear


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELREG_HOME", str(tmp_path / "home"))
    for name in ("DATABASE_URL", "STORAGE_URL", "INSTANCE_PATH", "MODELREG_URL"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def test_demo_prints_versions_aliases_and_the_trail(run):
    output = run("demo").output
    assert "version 1: linear baseline" in output and "version 2:" in output
    assert "production -> 2 (was 1)" in output
    assert "production -> 1 (was 2)" in output
    assert "aliases: {'production': 1}" in output
    trail = output.split("audit trail")[1]
    assert [t for t in ("rollback", "promote", "register", "create") if t in trail] == [
        "rollback",
        "promote",
        "register",
        "create",
    ]
    assert "by cli:" in trail


def test_register_promote_rollback_and_events(run, tmp_path):
    path = tmp_path / "price.skops"
    skops.io.dump(fit_linear(), path)
    metadata = tmp_path / "metadata.json"
    metadata.write_text('{"input_example": [[0.1, 0.2, 0.3]]}')
    with_example = ("--metadata", str(metadata))
    assert "registered price version 1" in run("register", "price", str(path), *with_example).output
    assert (
        "version 2"
        in run("register", "price", str(path), "--description", "two", *with_example).output
    )
    assert "production -> 1 (was None)" in run("promote", "price", "1", "--reason", "r1").output
    conflict = run("promote", "price", "2", "--expected-version", "7", ok=False)
    assert conflict.exit_code == 1 and "409 Conflict" in conflict.output
    assert "Traceback" not in conflict.output
    run("promote", "price", "2", "--expected-version", "1")
    assert "production -> 1 (was 2)" in run("rollback", "price").output
    listing = run("versions", "list", "price").output
    assert re.search(r"^2\s+ready\s+skops", listing, re.M)
    assert "price" in run("models", "list").output
    events = run("events", "price").output
    assert events.index("rollback") < events.index("promote") < events.index("register")


def test_the_embedded_default_needs_an_input_example_for_production(run, tmp_path):
    path = tmp_path / "price.skops"
    skops.io.dump(fit_linear(), path)
    run("register", "price", str(path))
    refused = run("promote", "price", "1", ok=False)
    assert refused.exit_code == 1 and "422" in refused.output
    assert "REQUIRE_INPUT_EXAMPLE_FOR" in refused.output and "PATCH" in refused.output
    assert "staging -> 1" in run("promote", "price", "1", "--alias", "staging").output


def test_tokens_and_database_commands(run):
    created = run(
        "tokens", "create", "--name", "ci", "--role", "publisher", "--expires-in-days", "30"
    )
    secret = created.output.strip().splitlines()[0]
    assert secret.startswith("mr_") and len(secret) > 40
    listed = run("tokens", "list").output
    assert "ci" in listed and "publisher" in listed and secret not in listed
    assert "revoked" in run("tokens", "revoke", "ci").output
    assert "revoked" in run("tokens", "list").output
    assert "current:" in run("db", "current").output
    assert "database at revision" in run("db", "upgrade").output


def test_storage_gc_reports(run, tmp_path):
    path = tmp_path / "m.skops"
    skops.io.dump(fit_linear(), path)
    run("register", "m", str(path))
    output = run("storage", "gc", "--dry-run", "--grace-minutes", "0").output
    # the artifact and its verified ONNX conversion
    assert "scanned 2 blobs" in output and "kept 2 referenced" in output


def test_cli_drives_a_running_server_with_a_token(tmp_path, monkeypatch):
    from manage import create_app
    from registry import auth
    from tests.conftest import LiveServer, make_config

    app = create_app(make_config(tmp_path, AUTH_DISABLED=False))
    secret, _ = auth.create_token(
        app.extensions["modelreg"].uow, name="ops", role="operator", actor="test"
    )
    server = LiveServer(app)
    try:
        runner = CliRunner()
        base = ["--url", server.url, "--token", secret]
        demo = runner.invoke(cli, [*base, "demo", "--name", "houses"], catch_exceptions=False)
        assert demo.exit_code == 0, demo.output
        assert "production -> 1 (was 2)" in demo.output and "by ops" in demo.output
        listed = runner.invoke(cli, [*base, "models", "list"], catch_exceptions=False)
        assert "houses" in listed.output
        refused = runner.invoke(
            cli,
            ["--url", server.url, "--token", "mr_wrong", "models", "list"],
            catch_exceptions=False,
        )
        assert refused.exit_code == 1 and "401" in refused.output
    finally:
        server.stop()
        app.extensions["modelreg"].engine.dispose()
