"""The `modelreg` command line, on the embedded default (a fresh MODELREG_HOME per test)."""

from __future__ import annotations

import json
import re
from pathlib import Path

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

    def invoke(*args: str, ok: bool = True, input: str | None = None):
        result = runner.invoke(cli, list(args), catch_exceptions=False, input=input)
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
    assert "registered price version 1" in run("register", "price", str(path)).output
    assert "version 2" in run("register", "price", str(path), "--description", "two").output
    assert "production -> 1 (was None)" in run("promote", "price", "1", "--reason", "r1").output
    conflict = run("promote", "price", "2", "--expected-version", "7", ok=False)
    assert conflict.exit_code == 1 and "409 Conflict" in conflict.output
    assert "Traceback" not in conflict.output
    run("promote", "price", "2", "--expected-version", "1")
    assert "production -> 1 (was 2)" in run("rollback", "price").output
    listing = run("versions", "list", "price").output
    assert re.search(r"^2\s+ready\s+skops", listing, re.M)
    assert "price" in run("models", "list").output
    events = run("events", "price").stdout
    assert events.index("rollback") < events.index("promote") < events.index("register")


def test_tokens_and_database_commands(run):
    created = run(
        "tokens", "create", "--name", "ci", "--role", "publisher", "--expires-in-days", "30"
    )
    secret = created.stdout.strip()
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


# ---- one home, whatever the current directory -------------------------------------------


def test_the_embedded_home_does_not_depend_on_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MODELREG_HOME")  # the per-user folder (XDG_DATA_HOME, a temp dir here)
    runner = CliRunner()
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir(), second.mkdir()
    monkeypatch.chdir(first)
    created = runner.invoke(cli, ["tokens", "create", "--name", "ci", "--role", "reader"])
    assert created.exit_code == 0, created.output
    monkeypatch.chdir(second)
    listed = runner.invoke(cli, ["tokens", "list"])
    assert "ci" in listed.stdout and "(none)" not in listed.stdout
    assert not (first / "instance").exists() and not (second / "instance").exists()
    data_home = Path(tmp_path_of_xdg()) / "modelreg" / "modelreg.db"
    assert data_home.is_file()
    assert f"database sqlite:///{data_home}" in listed.stderr


def tmp_path_of_xdg() -> str:
    import os

    return os.environ["XDG_DATA_HOME"]


def test_instance_path_wins_over_modelreg_home(run, tmp_path, monkeypatch):
    monkeypatch.setenv("INSTANCE_PATH", str(tmp_path / "explicit"))
    facts = json.loads(run("info", "--json").stdout)
    assert facts["home"] == str(tmp_path / "explicit")
    assert facts["home_from"] == "INSTANCE_PATH"
    assert facts["database"] == f"sqlite:///{tmp_path / 'explicit' / 'modelreg.db'}"
    assert facts["server"] is None
    monkeypatch.delenv("INSTANCE_PATH")
    assert "(from MODELREG_HOME)" in run("info").stdout


def test_every_command_names_what_it_acts_on_on_stderr(run, tmp_path):
    home = tmp_path / "home"
    for args in (["models", "list"], ["tokens", "list"], ["db", "current"]):
        result = run(*args)
        assert result.stderr.count("modelreg: ") == 1, result.stderr
        assert f"database sqlite:///{home / 'modelreg.db'}" in result.stderr
        assert "modelreg:" not in result.stdout


# ---- the wider command set ----------------------------------------------------------------


def _registered(run, tmp_path) -> Path:
    path = tmp_path / "price.skops"
    skops.io.dump(fit_linear(), path)
    example = tmp_path / "example.json"
    example.write_text("[[0.1, 0.2, 0.3]]")
    run("register", "price", str(path), "--description", "baseline",
        "--input-example", str(example))  # fmt: skip
    metadata = tmp_path / "meta.json"
    metadata.write_text(json.dumps({"metrics": {"rmse": 0.25}, "tags": {"team": "p"}}))
    run("register", "price", str(path), "--description", "retrained", "--metadata",
        str(metadata), "--input-example", "[[1, 2, 3]]")  # fmt: skip
    return path


def test_register_input_example_show_and_versions_list(run, tmp_path):
    _registered(run, tmp_path)
    shown = json.loads(run("show", "price", "1", "--json").stdout)
    assert shown["input_example"] == [[0.1, 0.2, 0.3]] and shown["description"] == "baseline"
    second = json.loads(run("show", "price", "--json").stdout)  # latest
    assert second["version"] == 2 and second["input_example"] == [[1, 2, 3]]
    assert second["metrics"] == {"rmse": 0.25}
    human = run("show", "price", "2").stdout
    assert re.search(r"^description:\s+retrained$", human, re.M)
    listing = run("versions", "list", "price").stdout
    assert re.search(r"^2\s+ready\s+skops\s+-\s+rmse=0.25\s+retrained\s", listing, re.M)
    rows = json.loads(run("versions", "list", "price", "--json").stdout)
    assert [r["version"] for r in rows] == [2, 1] or [r["version"] for r in rows] == [1, 2]


def test_bad_input_example_is_a_usage_error_naming_the_option(run, tmp_path):
    path = tmp_path / "m.skops"
    skops.io.dump(fit_linear(), path)
    bad = run("register", "m", str(path), "--input-example", "[[1, 2", ok=False)
    assert bad.exit_code == 2 and "--input-example" in bad.output and "JSON" in bad.output
    assert "Traceback" not in bad.output


def test_predict_download_aliases_archive_delete(run, tmp_path):
    path = _registered(run, tmp_path)
    run("promote", "price", "1")
    answer = json.loads(run("predict", "price", "production", "[[1, 1, 1], [0, 0, 0]]").stdout)
    expected = fit_linear().predict([[1, 1, 1], [0, 0, 0]])
    assert answer["version"] == 1
    assert answer["predictions"] == pytest.approx(expected.tolist(), rel=1e-6)
    target = tmp_path / "copy.skops"
    saved = run("download", "price", "production", "-o", str(target)).stdout
    assert "sha256" in saved and target.read_bytes() == path.read_bytes()
    assert json.loads(run("aliases", "price", "--json").stdout) == {"production": 1}
    assert re.search(r"^production\s+1$", run("aliases", "price").stdout, re.M)
    assert "price version 2 is archived" in run("archive", "price", "2").stdout
    refused = run("delete", "price", "1", "--yes", ok=False)
    assert refused.exit_code == 1 and "409" in refused.output
    assert "deleted price version 2" in run("delete", "price", "2", "--yes").stdout
    asked = run("delete", "price", input="n\n", ok=False)
    assert asked.exit_code == 1 and "Aborted" in asked.output


def test_listings_take_json_and_search(run, tmp_path):
    _registered(run, tmp_path)
    run("promote", "price", "2")
    models = json.loads(run("models", "list", "--search", "pri", "--json").stdout)
    assert [m["name"] for m in models] == ["price"]
    assert json.loads(run("models", "list", "--q", "nothing", "--json").stdout) == []
    assert "--search" in run("models", "list", "--help").stdout
    assert "--q" not in run("models", "list", "--help").stdout
    trail = json.loads(run("events", "price", "--json", "--limit", "1").stdout)
    assert trail[0]["type"] == "promote"
    run("tokens", "create", "--name", "ci", "--role", "reader")
    tokens = json.loads(run("tokens", "list", "--json").stdout)
    assert tokens[0]["name"] == "ci" and tokens[0]["state"] == "active"


def test_url_and_token_after_the_subcommand_and_tokens_through_the_server(tmp_path, run):
    from manage import create_app
    from registry import auth
    from tests.conftest import LiveServer, make_config

    app = create_app(make_config(tmp_path / "server", AUTH_DISABLED=False))
    secret, _ = auth.create_token(app.extensions["modelreg"].uow, name="root", role="admin",
                                  actor="test")  # fmt: skip
    server = LiveServer(app)
    try:
        remote = ["--url", server.url, "--token", secret]
        made = run("tokens", "create", "--name", "svc", "--role", "reader", *remote)
        assert f"modelreg: server {server.url}" in made.stderr
        svc_secret = made.stdout.strip()
        # the token was made by the server, so the server accepts it
        listed = run("models", "list", "--url", server.url, "--token", svc_secret)
        assert listed.stdout.strip() == "(none)"
        names = [t["name"] for t in json.loads(run("tokens", "list", "--json", *remote).stdout)]
        assert sorted(names) == ["root", "svc"]
        # and the embedded home knows nothing of it
        assert run("tokens", "list").stdout.strip() == "(none)"
        assert "revoked" in run("tokens", "revoke", "svc", *remote).stdout
        refused = run("models", "list", "--url", server.url, "--token", svc_secret, ok=False)
        assert refused.exit_code == 1 and "401" in refused.output
        facts = json.loads(run("info", "--json", *remote).stdout)
        assert facts["server"] == server.url and facts["server_health"] == "ok"
    finally:
        server.stop()
        app.extensions["modelreg"].engine.dispose()


def test_modelreg_url_and_token_from_the_environment(tmp_path, run, monkeypatch):
    from manage import create_app
    from registry import auth
    from tests.conftest import LiveServer, make_config

    app = create_app(make_config(tmp_path / "server", AUTH_DISABLED=False))
    secret, _ = auth.create_token(app.extensions["modelreg"].uow, name="root", role="admin",
                                  actor="test")  # fmt: skip
    server = LiveServer(app)
    try:
        monkeypatch.setenv("MODELREG_URL", server.url)
        monkeypatch.setenv("MODELREG_TOKEN", secret)
        result = run("tokens", "list")
        assert "root" in result.stdout and f"server {server.url}" in result.stderr
    finally:
        server.stop()
        app.extensions["modelreg"].engine.dispose()


def test_serve_reads_port_and_host_from_the_environment(monkeypatch):
    command = cli.get_command(None, "serve")
    params = {p.name: p for p in command.params}
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("MODELREG_HOST", "0.0.0.0")
    ctx = command.make_context("serve", [])
    assert ctx.params["port"] == 9001 and ctx.params["host"] == "0.0.0.0"
    monkeypatch.setenv("MODELREG_PORT", "9002")  # MODELREG_PORT wins over PORT
    assert command.make_context("serve", []).params["port"] == 9002
    assert "MODELREG_PORT" in params["port"].help
