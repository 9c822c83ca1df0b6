"""The README's five-minute tour, run as written: its shell and Python blocks in order, as one
bash script, starting a real `modelreg serve` on a free port with a temporary home folder.

Only the port is changed (8080 -> a free one, which MODELREG_PORT gives `modelreg serve`).
If the tour stops working as pasted, this fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.servers import free_port

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```(bash|python)\n(.*?)^```", re.M | re.S)


def tour_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every bash and python block of the tour section, in order."""
    section = text.split("\n## A five-minute tour\n", 1)[1].split("\n## ", 1)[0]
    return FENCE.findall(section)


def tour_script(blocks: list[tuple[str, str]], port: int) -> str:
    parts = ["set -euo pipefail"]
    for language, code in blocks:
        if language == "python":
            parts.append(f"python - <<'README_PYTHON'\n{code}README_PYTHON")
        else:
            parts.append(code)
    return "\n".join(parts).replace(":8080", f":{port}")


def test_the_tour_has_the_three_parts_the_readme_promises() -> None:
    languages = [language for language, _ in tour_blocks(README.read_text())]
    assert languages == ["bash", "python", "bash"]


def test_the_tour_runs_top_to_bottom(tmp_path) -> None:
    port = free_port()
    script = tmp_path / "tour.sh"
    script.write_text(tour_script(tour_blocks(README.read_text()), port))
    work = tmp_path / "work"
    work.mkdir()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MODELREG_HOME": str(tmp_path / "home"),
        "LOG_LEVEL": "WARNING",
        "MODELREG_PORT": str(port),  # `modelreg serve` in the tour listens there
    }
    for name in ("MODELREG_URL", "MODELREG_TOKEN", "INSTANCE_PATH", "DATABASE_URL",
                 "STORAGE_URL", "PORT"):  # fmt: skip
        env.pop(name, None)
    process = subprocess.Popen(
        ["bash", str(script)],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the background server is in this group, ended below
    )
    try:
        output, _ = process.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    log = (work / "modelreg.log").read_text() if (work / "modelreg.log").exists() else ""
    assert process.returncode == 0, f"{output}\n--- server log ---\n{log}"

    # curl: pinned and alias predictions answered by version 1
    assert re.search(r"x-model-version: 1", output, re.I)
    # Python: predictions, the trail, and a model loaded back that predicts like the server
    assert "['rollback', 'promote', 'promote', 'register', 'register', 'create']" in output
    # CLI: through the server, with the one line on stderr saying so
    assert f"modelreg: server http://127.0.0.1:{port}" in output
    assert "registered price version 3" in output
    assert "price: production -> 3 (was 1)" in output
    assert "price: production -> 1 (was 3)" in output
    assert "price version 2 is archived" in output
    assert (work / "price-v3.skops").read_bytes() == (work / "price.skops").read_bytes()
    assert "token 'ci' revoked" in output
