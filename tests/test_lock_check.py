"""tools/check_lock.py: the lock holds only plain ``name==version`` pins (a fresh machine must install it)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "check_lock.py"
_spec = importlib.util.spec_from_file_location("check_lock", SCRIPT)
check_lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_lock)


def _run(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    lock = tmp_path / "requirements.lock"
    lock.write_text(text)
    return subprocess.run([sys.executable, str(SCRIPT), str(lock)], capture_output=True, text=True)


def test_repository_lock_is_clean() -> None:
    assert check_lock.bad_lines((ROOT / "requirements.lock").read_text()) == []
    assert subprocess.run([sys.executable, str(SCRIPT), str(ROOT / "requirements.lock")]).returncode == 0


def test_url_line_is_refused_and_named(tmp_path: Path) -> None:
    text = ("# pinned\nnumpy==2.4.6\n\n"
            "sacrebleu @ file:///tmp/dl/sacrebleu-2.6.0-py3-none-any.whl#sha256=3edc\n"
            "torch==2.13.0  # the CPU build\n")
    res = _run(tmp_path, text)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert lines[0] == (f"error: {tmp_path / 'requirements.lock'}:4: not a plain name==version pin: "
                        "sacrebleu @ file:///tmp/dl/sacrebleu-2.6.0-py3-none-any.whl#sha256=3edc")
    assert lines[-1].startswith("error: the lock may hold only name==version lines")
    assert len(lines) == 2


@pytest.mark.parametrize("line", [
    "pkg @ https://example.org/pkg-1.0.tar.gz", "./wheels/pkg-1.0-py3-none-any.whl", "-e .",
    "--index-url https://example.org/simple", "pkg>=1.0", "pkg", "torch==2.13.0+cpu", "pkg==1.*",
    "git+https://example.org/pkg.git", "pkg==1.0 --hash=sha256:abc",
])
def test_every_non_pin_is_refused(line: str) -> None:
    assert check_lock.bad_lines(f"ok==1.0\n{line}\n") == [(2, line)]


@pytest.mark.parametrize("line", ["typing_extensions==4.16.0", "Jinja2==3.1.6", "pkg[extra]==1.0rc1",
                                  "certifi==2026.10.18", "x==1.0.post2", "  # a comment", ""])
def test_plain_pins_and_comments_pass(line: str) -> None:
    assert check_lock.bad_lines(line + "\n") == []


def test_missing_lock_file(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nope.lock")], capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.startswith(f"error: cannot read lock file {tmp_path / 'nope.lock'}:")
