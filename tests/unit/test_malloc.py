"""serving.malloc: capping glibc's malloc arenas for `modelreg serve`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _in_fresh_process(code: str, **env: str) -> str:
    environ = {
        k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")
    }
    environ.update(env)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_the_cap_is_applied_on_glibc():
    code = "from serving.malloc import limit_malloc_arenas as f; print(f(1), f(0))"
    assert _in_fresh_process(code) == "True False"


def test_an_operator_setting_wins():
    code = "from serving.malloc import limit_malloc_arenas as f; print(f(1))"
    assert _in_fresh_process(code, MALLOC_ARENA_MAX="4") == "False"
    tunable = "glibc.malloc.arena_max=4"
    assert _in_fresh_process(code, GLIBC_TUNABLES=tunable) == "False"


def test_the_setting_defaults_to_one_arena_and_can_be_turned_off():
    assert load_config({}).MALLOC_ARENAS == 1
    assert load_config({"MALLOC_ARENAS": "0"}).MALLOC_ARENAS == 0
