#!/usr/bin/env python3
"""Refuse a lock file whose lines are not plain ``name==version`` pins.

A line like ``pkg @ file:///tmp/pkg.whl`` (what ``pip freeze`` writes for a package installed from
a file) installs only on the machine that had that file; a URL, a path, ``-e``, ``--index-url`` or
a range installs something the lock does not pin. Comments and blank lines are allowed.

Usage: ``python tools/check_lock.py [requirements.lock]``; exits 1 naming each bad line.
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

#: ``name==version`` with an optional extras list; the version is a PEP 440 public version
PIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:\[[A-Za-z0-9._,-]+\])?"
                 r"==[0-9]+(?:\.[0-9]+)*(?:(?:a|b|rc)[0-9]+)?(?:\.post[0-9]+)?(?:\.dev[0-9]+)?$")


def bad_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` for every line that is neither a plain pin, a comment nor blank."""
    out = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line and not PIN.match(line):
            out.append((n, raw.rstrip()))
    return out


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "requirements.lock")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        print(f"error: cannot read lock file {path}: {e.strerror}", file=sys.stderr)
        return 1
    bad = bad_lines(text)
    for n, line in bad:
        print(f"error: {path}:{n}: not a plain name==version pin: {line}", file=sys.stderr)
    if bad:
        print("error: the lock may hold only name==version lines (comments allowed); "
              "regenerate it with `make lock`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
