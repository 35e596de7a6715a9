"""Dataset registry: names -> files, checksums, sources and typed loaders; resolution and download.

``load_dataset(name, split=None, root=None, limit=None, seed=0)`` returns the typed records of
one dataset split. The files are looked for, per dataset, in this order:

1. ``root`` when given (authoritative: when the files are not there, it is an error);
2. ``$STEERLAB_DATA`` (the layout of ``../shared/data``);
3. the user cache, ``$STEERLAB_CACHE/data`` or ``platformdirs.user_cache_dir("steerlab")/data``;
4. a download into the user cache, only when allowed (``allow_download=True`` or
   ``STEERLAB_ALLOW_DOWNLOAD=1``): each file from ``$STEERLAB_DATA_MIRROR`` if set, then the
   dataset's canonical upstream where one is known, then the exact GitHub copy (repository and
   commit) listed in ``SOURCES.md``; every file is verified against its SHA-256.

When nothing is found, :class:`~steerlab.data.DataNotFoundError` says where it looked, which
files are missing and how to provide them.

Registered names (``dataset_names()`` lists them all): ``truthfulqa``, ``truthfulqa_mc``,
``copa``, ``storycloze``, ``snli``, ``mmlu``, ``sst2``, ``winogrande``, ``sts12`` ... ``sts16``,
``stsb``, ``sick``, ``persona/<trait>``, ``ai_risk/<set>`` (Anthropic advanced-AI-risk,
human-written A/B), ``caa/<behavior>``, ``ifeval_format``, ``persona_vectors/<trait>``.
"""

from __future__ import annotations

import functools
import os
import random
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence, TypeVar

from . import ENV_VAR, DataNotFoundError
from .download import (
    DOWNLOAD_ENV,
    MIRROR_ENV,
    Fetcher,
    RemoteFile,
    cache_data_dir,
    download_files,
    downloads_allowed,
    fetch_url,
    sha256_file,
)
from .ifeval import load_ifeval_format
from .multiple_choice import (
    MC_SPLITS,
    load_copa,
    load_mmlu,
    load_snli,
    load_sst2,
    load_storycloze,
    load_winogrande,
)
from .persona import AI_RISK_DIR, CAA_DIR, CAA_SPLITS, PERSONA_DIR, load_ai_risk, load_caa, load_persona
from .persona_vectors import PV_SPLITS, load_persona_vectors
from .records import (
    ABItem,
    COPAItem,
    IFEvalPrompt,
    MMLUItem,
    NLIItem,
    PersonaStatement,
    PersonaVectorQuestion,
    SST2Item,
    StoryClozeItem,
    TruthfulQAItem,
    TruthfulQAMCItem,
    WinograndeItem,
)
from .sts import STS_YEARS, STSPair, load_sick, load_sts, load_stsb
from .truthfulqa import CSV_PATH, MC_PATHS, load_truthfulqa, load_truthfulqa_mc

__all__ = [
    "DatasetSpec",
    "dataset_names",
    "get_spec",
    "known_file",
    "remote_file",
    "resolve_dataset",
    "load_dataset",
    "subsample",
    "verify_dataset",
]

Loader = Callable[[Path, str], list[Any]]
T = TypeVar("T")


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset: its splits (relative file lists), loader and provenance."""

    name: str
    description: str
    splits: Mapping[str, tuple[str, ...]]
    default_split: str
    loader: Loader = field(repr=False)
    record_type: type
    homepage: str = ""
    license: str = ""
    aliases: Mapping[str, str] = field(default_factory=dict)

    def split_name(self, split: str | None) -> str:
        """The canonical split for ``split`` (None -> the default split; aliases resolved)."""
        if split is None:
            return self.default_split
        s = self.aliases.get(split, split)
        if s not in self.splits:
            raise ValueError(f"dataset '{self.name}' has splits {', '.join(self.splits)}; got '{split}'")
        return s

    def files(self, split: str | None = None) -> tuple[str, ...]:
        """Files (relative to the data root) that ``split`` needs."""
        return self.splits[self.split_name(split)]

    def remote_files(self, split: str | None = None) -> tuple[RemoteFile, ...]:
        return tuple(remote_file(rel) for rel in self.files(split))


# --------------------------------------------------------------------------- sources table


def _raw_url(repo: str, ref: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{ref}/{urllib.parse.quote(path)}"


@functools.lru_cache(maxsize=1)
def _table() -> Mapping[str, tuple[str, str, str]]:
    """relpath -> (sha256, mirror key, path in the mirror repository); parsed once from ``_FILES``."""
    out: dict[str, tuple[str, str, str]] = {}
    for line in _FILES.strip().splitlines():
        parts = line.split(" ", 3)
        rel, sha, key = parts[0], parts[1], parts[2]
        _, _, lp, rp = _MIRRORS[key]
        if len(parts) == 4:
            repo_path = parts[3]
        else:
            tail = rel[len(lp) + 1:] if lp else rel
            repo_path = f"{rp}/{tail}" if rp else tail
        out[rel] = (sha, key, repo_path)
    return MappingProxyType(out)


def known_file(relpath: str) -> bool:
    """Whether ``relpath`` is a file of the shared data layout with a pinned checksum."""
    return relpath in _table()


def remote_file(relpath: str) -> RemoteFile:
    """Checksum and source URLs of a data file (canonical upstream first, then the pinned copy)."""
    entry = _table().get(relpath)
    if entry is None:
        return RemoteFile(relpath, None, ())
    sha, key, repo_path = entry
    repo, commit, _, _ = _MIRRORS[key]
    urls = []
    up = _UPSTREAM.get(key)
    if up is not None and repo_path.startswith(up[2]):
        urls.append(_raw_url(up[0], up[1], up[3] + repo_path[len(up[2]):]))
    urls.append(_raw_url(repo, commit, repo_path))
    return RemoteFile(relpath, sha, tuple(urls))


def _under(prefix: str, suffix: str = "") -> tuple[str, ...]:
    return tuple(sorted(r for r in _table() if r.startswith(prefix) and r.endswith(suffix)))


def _names_under(prefix: str, suffix: str) -> list[str]:
    return sorted({r[len(prefix):-len(suffix)] for r in _under(prefix, suffix) if "/" not in r[len(prefix):-len(suffix)]})


# --------------------------------------------------------------------------- specs


def _sts_files(year: str) -> tuple[str, ...]:
    folder = f"sts/{year}-en-test/"
    return tuple(r for r in _under(folder) if r[len(folder):].startswith(("STS.input.", "STS.gs.")) and r.endswith(".txt"))


@functools.lru_cache(maxsize=1)
def _specs() -> Mapping[str, DatasetSpec]:
    specs: list[DatasetSpec] = [
        DatasetSpec("truthfulqa", "TruthfulQA questions with best/correct/incorrect answers (CSV, 817)",
                    {"validation": (CSV_PATH,)}, "validation", lambda r, s: load_truthfulqa(s, r), TruthfulQAItem,
                    "https://github.com/sylinrl/TruthfulQA", "Apache-2.0", {"test": "validation"}),
        DatasetSpec("truthfulqa_mc", "TruthfulQA multiple-choice targets (mc1/mc2), v1 or original v0",
                    {k: (v,) for k, v in MC_PATHS.items()}, "v1", lambda r, s: load_truthfulqa_mc(s, r),
                    TruthfulQAMCItem, "https://github.com/sylinrl/TruthfulQA", "Apache-2.0",
                    {"validation": "v1"}),
        DatasetSpec("copa", "SuperGLUE COPA (val 100, train 400)", MC_SPLITS["copa"], "val",
                    lambda r, s: load_copa(s, r), COPAItem, "https://people.ict.usc.edu/~gordon/copa.html",
                    "BSD-2-Clause", {"validation": "val"}),
        DatasetSpec("storycloze", "Story Cloze Test 2016 (test/val 1871) and 2018 val (1571)",
                    MC_SPLITS["storycloze"], "test", lambda r, s: load_storycloze(s, r), StoryClozeItem,
                    "https://cs.rochester.edu/nlp/rocstories/", "research use", {"validation": "val"}),
        DatasetSpec("snli", "SNLI 1.0 with gold labels (test 9824, dev 9842), 3-way",
                    MC_SPLITS["snli"], "test", lambda r, s: load_snli(s, r), NLIItem,
                    "https://nlp.stanford.edu/projects/snli/", "CC-BY-SA-4.0", {"validation": "dev"}),
        DatasetSpec("mmlu", "MMLU, 57 subjects (test 14042, dev 285)",
                    {"test": _under("mc/mmlu/test/", "_test.csv"), "dev": _under("mc/mmlu/dev/", "_dev.csv")},
                    "test", lambda r, s: load_mmlu(s, r), MMLUItem, "https://github.com/hendrycks/test", "MIT"),
        DatasetSpec("sst2", "GLUE SST-2 (dev 872, train 67349) and SentEval SST-2 (dev 872, test 1821)",
                    MC_SPLITS["sst2"], "dev", lambda r, s: load_sst2(s, r), SST2Item,
                    "https://gluebenchmark.com/", "see GLUE", {"validation": "dev"}),
        DatasetSpec("winogrande", "WinoGrande 1.1 dev (1267), partial-scoring form",
                    MC_SPLITS["winogrande"], "dev", lambda r, s: load_winogrande(s, r), WinograndeItem,
                    "https://winogrande.allenai.org/", "CC-BY", {"validation": "dev"}),
        DatasetSpec("ifeval_format", "163 single-instruction IFEval format prompts (llm-steer-instruct)",
                    {"test": ("steer_instruct/format/ifeval_single_instr_format.jsonl",)}, "test",
                    lambda r, s: load_ifeval_format(s, r), IFEvalPrompt,
                    "https://github.com/microsoft/llm-steer-instruct", "MIT"),
    ]
    for year in STS_YEARS:
        specs.append(DatasetSpec(year.lower(), f"{year} (SentEval layout, all subsets pooled)",
                                 {"test": _sts_files(year)}, "test",
                                 functools.partial(_sts_loader, year), STSPair,
                                 "https://github.com/facebookresearch/SentEval", "see the readme files"))
    specs.append(DatasetSpec("stsb", "STS Benchmark (train 5749, dev 1500, test 1379)",
                             {s: (f"sts/STSBenchmark/sts-{s}.csv",) for s in ("train", "dev", "test")}, "test",
                             lambda r, s: load_stsb(s, r), STSPair, "https://ixa2.si.ehu.eus/stswiki",
                             "CC-BY-SA-4.0", {"validation": "dev"}))
    sick = {"train": "SICK_train.txt", "trial": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
    specs.append(DatasetSpec("sick", "SICK relatedness (train 4500, trial 500, test 4927)",
                             {s: (f"sts/SICK/{f}",) for s, f in sick.items()}, "test",
                             lambda r, s: load_sick(s, r), STSPair, "https://marcobaroni.org/composes/sick.html",
                             "CC-BY-NC-SA-3.0", {"validation": "trial", "dev": "trial"}))
    for trait in _names_under(PERSONA_DIR + "/", ".jsonl"):
        specs.append(_persona_spec(trait))
    for name in _names_under(AI_RISK_DIR + "/", ".jsonl"):
        specs.append(_ai_risk_spec(name))
    for behavior in sorted({r.split("/")[2] for r in _under(CAA_DIR + "/")}):
        specs.append(_caa_spec(behavior))
    for trait in _names_under(PV_SPLITS["extract"] + "/", ".json"):
        specs.append(_pv_spec(trait))
    return MappingProxyType({s.name: s for s in specs})


def _sts_loader(year: str, root: Path, split: str) -> list[STSPair]:
    return load_sts(year, split, root)


def _persona_spec(trait: str) -> DatasetSpec:
    return DatasetSpec(f"persona/{trait}", f"Anthropic persona statements: {trait} (Yes/No)",
                       {"test": (f"{PERSONA_DIR}/{trait}.jsonl",)}, "test",
                       functools.partial(_call_named, load_persona, trait), PersonaStatement,
                       "https://github.com/anthropics/evals", "CC-BY-4.0")


def _ai_risk_spec(name: str) -> DatasetSpec:
    return DatasetSpec(f"ai_risk/{name}", f"Anthropic advanced-AI-risk (human-written): {name} (A/B)",
                       {"test": (f"{AI_RISK_DIR}/{name}.jsonl",)}, "test",
                       functools.partial(_call_named, load_ai_risk, name), ABItem,
                       "https://github.com/anthropics/evals", "CC-BY-4.0")


def _caa_spec(behavior: str) -> DatasetSpec:
    return DatasetSpec(f"caa/{behavior}", f"CAA {behavior}: generate (fit) / test (A/B) / open_ended",
                       {s: (f"{CAA_DIR}/{behavior}/{f}",) for s, f in CAA_SPLITS.items()}, "test",
                       functools.partial(_call_named, load_caa, behavior), ABItem,
                       "https://github.com/nrimsky/CAA", "MIT", {"train": "generate"})


def _pv_spec(trait: str) -> DatasetSpec:
    return DatasetSpec(f"persona_vectors/{trait}", f"Persona Vectors trait '{trait}': extract / eval questions",
                       {s: (f"{d}/{trait}.json",) for s, d in PV_SPLITS.items()}, "extract",
                       functools.partial(_call_named, load_persona_vectors, trait), PersonaVectorQuestion,
                       "https://github.com/safety-research/persona_vectors", "no license file upstream",
                       {"train": "extract", "test": "eval"})


def _call_named(fn: Callable[..., list[Any]], name: str, root: Path, split: str) -> list[Any]:
    return fn(name, split, root)


_FAMILIES: Mapping[str, Callable[[str], DatasetSpec]] = MappingProxyType({
    "persona": _persona_spec, "ai_risk": _ai_risk_spec, "caa": _caa_spec, "persona_vectors": _pv_spec,
})


def dataset_names() -> list[str]:
    """Every registered dataset name."""
    return sorted(_specs())


def get_spec(name: str) -> DatasetSpec:
    """The spec of ``name``. ``family/<x>`` names not in the table (e.g. extra persona traits in
    your own data folder) get a spec without checksums or download sources."""
    key = name.strip()
    spec = _specs().get(key) or _specs().get(key.lower())
    if spec is not None:
        return spec
    family, sep, member = key.partition("/")
    if sep and member and family in _FAMILIES and "/" not in member and ".." not in member:
        return _FAMILIES[family](member)
    close = [n for n in dataset_names() if key.lower() in n]
    hint = f" (did you mean {', '.join(close[:5])}?)" if close else ""
    raise KeyError(f"unknown dataset '{name}'{hint}; see steerlab.data.registry.dataset_names()")


# --------------------------------------------------------------------------- resolution


def _missing(root: Path, files: Sequence[str]) -> list[str]:
    return [f for f in files if not (root / f).is_file()]


def _fmt_missing(missing: Sequence[str]) -> str:
    return ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")


def resolve_dataset(
    name: str,
    split: str | None = None,
    root: str | os.PathLike[str] | None = None,
    allow_download: bool | None = None,
    progress: bool = False,
    fetch: Fetcher = fetch_url,
) -> Path:
    """The data root that holds every file of ``name``/``split`` (downloading into the cache if allowed)."""
    spec = get_spec(name)
    split = spec.split_name(split)
    files = spec.files(split)
    if not files:
        raise DataNotFoundError(f"dataset '{spec.name}' split '{split}' lists no files")
    if root is not None:
        p = Path(root).expanduser()
        missing = _missing(p, files)
        if not missing:
            return p
        raise DataNotFoundError(
            f"dataset '{spec.name}' (split '{split}') not found under the given root {p}: "
            f"missing {_fmt_missing(missing)}"
        )
    looked: list[str] = []
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        missing = _missing(p, files)
        if not missing:
            return p
        looked.append(f"${ENV_VAR}={env}: " + ("not a directory" if not p.is_dir() else f"missing {_fmt_missing(missing)}"))
    else:
        looked.append(f"${ENV_VAR}: not set")
    cache = cache_data_dir()
    missing = _missing(cache, files)
    if not missing:
        return cache
    looked.append(f"user cache {cache}: missing {_fmt_missing(missing)}")
    remote = spec.remote_files(split)
    can_download = all(f.urls for f in remote) or bool(os.environ.get(MIRROR_ENV))
    if downloads_allowed(allow_download) and can_download:
        download_files(remote, cache, fetch=fetch, progress=progress, label=f"download {spec.name}")
        return cache
    if not can_download:
        how_dl = "no download source is known for it"
    elif allow_download is False:
        how_dl = "downloads were turned off (allow_download=False)"
    else:
        how_dl = (f"or allow a download into the cache with allow_download=True / {DOWNLOAD_ENV}=1 "
                  f"(from {remote[0].urls[-1] if remote and remote[0].urls else 'its source'} ..., SHA-256 verified)")
    raise DataNotFoundError(
        f"dataset '{spec.name}' (split '{split}') not found. Looked in: " + "; ".join(looked) + ". "
        f"Provide the files: pass root=<folder> or set {ENV_VAR} to a folder with the layout of ../shared/data "
        f"(it needs {_fmt_missing(list(files))}), {how_dl}."
    )


def subsample(items: Sequence[T], limit: int | None, seed: int = 0) -> list[T]:
    """At most ``limit`` items, drawn without replacement with ``seed``, kept in their original order."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def load_dataset(
    name: str,
    split: str | None = None,
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    allow_download: bool | None = None,
    progress: bool = False,
) -> list[Any]:
    """Typed records of ``name``/``split``; ``limit`` keeps a seeded random subset (original order)."""
    spec = get_spec(name)
    split = spec.split_name(split)
    base = resolve_dataset(spec.name, split, root, allow_download=allow_download, progress=progress)
    return subsample(spec.loader(base, split), limit, seed)


def verify_dataset(name: str, split: str | None = None, root: str | os.PathLike[str] | None = None) -> dict[str, bool | None]:
    """``{relpath: matches its pinned SHA-256}`` for the files of a split (None: no pinned checksum)."""
    spec = get_spec(name)
    base = resolve_dataset(spec.name, split, root, allow_download=False)
    out: dict[str, bool | None] = {}
    for f in spec.remote_files(split):
        out[f.relpath] = None if f.sha256 is None else sha256_file(base / f.relpath) == f.sha256
    return out


# --------------------------------------------------------------------------- sources

#: canonical upstreams tried before the pinned copy: mirror key -> (repo, ref, mirror prefix, upstream prefix)
_UPSTREAM: Mapping[str, tuple[str, str, str, str]] = MappingProxyType({
    "tqa": ("sylinrl/TruthfulQA", "main", "TruthfulQA/", ""),
    "caa": ("nrimsky/CAA", "main", "Datasets/", "datasets/"),
    "pv": ("safety-research/persona_vectors", "main", "data_generation/", "data_generation/"),
})

#: mirror sources: key -> (GitHub repo, commit, local prefix, prefix in the repo)
_MIRRORS: Mapping[str, tuple[str, str, str, str]] = MappingProxyType({
    "tqa": ("newBlanco/Modified_truthX", "39e91d49c5b26bdef976da70be6c12829739e83e", "truthfulqa", "TruthfulQA/data"),
    "synwmd": ("amao0o0/SynWMD", "59042a92e862db58bd01e47914345d2f52d2a4a3", "sts", "data/downstream/STS"),
    "senteval": ("yan-soares/research_embeddings_fine_tuning", "045c5e94572a60c6bd7173e152c897f6b694c5a8", "mc/nli/snli_senteval", "data/downstream/SNLI"),
    "anthropic": ("anthropics/evals", "84fcc677e52e1902d696c32cd1a6b663e70d3993", "persona/anthropic_persona", "persona"),
    "caa": ("EleutherAI/rnngineering", "b18a80e3f7e3259f21e2a6574aaed3a21954aac6", "persona/caa", "Datasets/test"),
    "pet": ("louisbzk/pet", "e29a6f0ef752b3d1f37b1d735585eeaef7a0477d", "mc", "data"),
    "cloze16": ("p-null/openai-gpt-pytorch", "3684b880f64ece7772087afe25ba73835bce50ce", "mc/storycloze/spring2016_val.csv", "data/cloze_test_val__spring2016 - cloze_test_ALL_val.csv"),
    "cloze18": ("ChemJeff/StoryCloze_ROCStories", "0f535f17ecdd9c20f934160b01efaba9d05ada8a", "mc/storycloze/winter2018_val.csv", "data/val.csv"),
    "glue": ("TaoCesc/binary_cls", "6a73b09b39af0efe049622662211f3657c75a15e", "mc/sst2", "data/SST-2"),
    "mmlu": ("HaeChan0305/MLILAB-FedLLM", "d92730e8bacd7b3a61e551e015e40588e10234b4", "mc", "data"),
    "foundry": ("mosaicml/llm-foundry", "8c8dd48f72168c5d51e2f7b151595892a8fba43d", "mc/winogrande/dev_llmfoundry.jsonl", "scripts/eval/local_data/language_understanding/winogrande.jsonl"),
    "opencompass": ("genggui001/opencompass", "5649a0f7e3d246ed58ffaef865f8b818cd8e0044", "mc", "data"),
    "steerinstr": ("microsoft/llm-steer-instruct", "9dac937ef6fc3e483b1efc13863deeb03ec38dbe", "steer_instruct", "data"),
    "axbench": ("stanfordnlp/axbench", "e9b8cd4783c983e350d78af76f3fb2b8b15fc7d3", "", ""),
    "pv": ("dxnlp/persona_vectors", "e9f55e764f4bac71f5da0e49bd35f7600395f27d", "persona_vectors", "data_generation"),
})

#: every file of ../shared/data: path, sha256, mirror key[, path in the mirror repo when not derivable]
_FILES = """\
truthfulqa/TruthfulQA.csv f9bd9e859cc102cb1f647f1064da7e009be752c416845cf9fa56e6eaae403a7d tqa TruthfulQA/TruthfulQA.csv
truthfulqa/mc_task.json b3799639bc76c939836d587de7d30b48d91012cb34be04806d33106ce06c162a tqa
truthfulqa/v0/mc_task.json 6eb4125d25750c0145c4be2dce00440736684ab6f74ce6bff2139571cc758954 tqa
sts/STS12-en-test/00-readme.txt d47be1641ac98ac312de6f0746b65683df392f70d843eaac9fb10ebd4cb4cb63 synwmd
sts/STS12-en-test/STS.gs.MSRpar.txt 5526be59228bc34ccb3cb6f1f56c0d7278d3419b8886713ae016fd92b151f19c synwmd
sts/STS12-en-test/STS.gs.MSRvid.txt 9c6096c6bcfb0144c8bbddb00900ca9198c88498630cd0c8f08d18365f1d7150 synwmd
sts/STS12-en-test/STS.gs.SMTeuroparl.txt 708530c4d006d06881f3289fce35d624d7efe562dcf0fe5f8aa0eec3a135f6d4 synwmd
sts/STS12-en-test/STS.gs.surprise.OnWN.txt 088d8ca22c0aa406e4a5d2e6e308a4f38b482b8e736c2445a38ffb6e4c4fb4fd synwmd
sts/STS12-en-test/STS.gs.surprise.SMTnews.txt aa6dfc868db333c43dc59be14d46fa6587c7ebddc0d497e717f647bf35121cf1 synwmd
sts/STS12-en-test/STS.input.MSRpar.txt 093b36d9cc1cd26364885c0f5d5be7ed024f475bceb552384f7fd489174b3c4f synwmd
sts/STS12-en-test/STS.input.MSRvid.txt 5a007f6882ed3398afdbb0d1ed093457c4adbac82a5b411ea356e0985650c39f synwmd
sts/STS12-en-test/STS.input.SMTeuroparl.txt 971d76409ebd10a2285a846a20fd035e4e4ba2f85054e2869f5b41bb3182ca82 synwmd
sts/STS12-en-test/STS.input.surprise.OnWN.txt 1059c1b66fc72071881175754d3a01158e423ec6b032e1dd87b18fc7ecb1e8d9 synwmd
sts/STS12-en-test/STS.input.surprise.SMTnews.txt 048cbedbba58a136722e9d102f0416326aa04644180e031318c28caf90258585 synwmd
sts/STS13-en-test/00-readme.txt 531ee28a3787b11dd14dda8d809e724479d87f9705120494aad584c9cb14a6ce synwmd
sts/STS13-en-test/STS.gs.FNWN.txt 8ca95b7228119578e2007839cf7969f22c4f1fd41fd610c4b7f9683072d98066 synwmd
sts/STS13-en-test/STS.gs.OnWN.txt 0cd497aaddb00a2fb6db25f77bccfc09e8aa012e11549b81b434bab1a27ad954 synwmd
sts/STS13-en-test/STS.gs.headlines.txt f49f64089011436dd296ef384c07160219406feef7dc4b9fa2af52a519f32bc6 synwmd
sts/STS13-en-test/STS.input.FNWN.txt 7bcc0fc86d30c8980c9ac9735c612492abd236524bec32bed98070e225b2e023 synwmd
sts/STS13-en-test/STS.input.OnWN.txt 3c616d878f3d7bfbadce1657bcc5a78d7d429fd10fc2e31195d314543fecab1a synwmd
sts/STS13-en-test/STS.input.headlines.txt e60c724b4b620802f42d7696f27e6a8153205a716b142f0a051e2b2b2e99e505 synwmd
sts/STS14-en-test/00-readme.txt 9fe9d64362ac42ed24010d5b00f227235a660dc2466fba743f31051fd121ef73 synwmd
sts/STS14-en-test/STS.gs.OnWN.txt 1c80147df270ea4cfce14a47ed29f8a2f10d5dc016d02836077fd786ff7f535b synwmd
sts/STS14-en-test/STS.gs.deft-forum.txt ba6dc76696b5c93985590a325b4d142449932cdf0d715b2bab1b1743fe3c488c synwmd
sts/STS14-en-test/STS.gs.deft-news.txt 105c5b333abd50c274efb4dae9e3e0dab36ed63eee780cfb49955b1586bd62f2 synwmd
sts/STS14-en-test/STS.gs.headlines.txt f243c34647255cd0b994565ed4f58dd31506e7d9c9d6250d1a6dd14095625832 synwmd
sts/STS14-en-test/STS.gs.images.txt fc994ebacc7074c332626fa9e29542d7340a48a3cdb999b47cdb59c378523a62 synwmd
sts/STS14-en-test/STS.gs.tweet-news.txt 0098c644bfeaa2d511a8297b1940771865900c372c9dd49a62726dc5ec02c9a3 synwmd
sts/STS14-en-test/STS.input.OnWN.txt 52f462f085f6920f70115761c50924f16a4fd6caec2cfccec82311619c1be326 synwmd
sts/STS14-en-test/STS.input.deft-forum.txt 7d52c9b130cf0d0291b2f2ea5324363219267ffcecf0a56f4306503adb231714 synwmd
sts/STS14-en-test/STS.input.deft-news.txt 2416e9f1a13136ac213cbfd413d98cd8504edcca21c87deef3aa5c1207bc1448 synwmd
sts/STS14-en-test/STS.input.headlines.txt 08e808b7786ec7b830badf9843c55fc7930467ae75e2cd6fe8fd518496b66730 synwmd
sts/STS14-en-test/STS.input.images.txt 3d44abc6af8d8b1c69b6e93bb386176d5896985dba91a13e5587350e92a90c83 synwmd
sts/STS14-en-test/STS.input.tweet-news.txt 6b0173393868ea87f315f32971bff68b328e466678f481d4710d8488e7cc90de synwmd
sts/STS15-en-test/00-readme.txt 38fe35ef21a0f224b6cc51e00d138810063521cd90458a7d77e4e0aa3a79542d synwmd
sts/STS15-en-test/STS.gs.answers-forums.txt 1644301a7540e5484da285002e9269062852efb2272be614cad99c9530f6a102 synwmd
sts/STS15-en-test/STS.gs.answers-students.txt 028db213140f8c7aef7497c4ae38b6380938f20359852231669c83dce11c3701 synwmd
sts/STS15-en-test/STS.gs.belief.txt 5736192faaccbdbecd0ef6b73ec04b24115cd2e48d55dc3b1b170da3d2a81c75 synwmd
sts/STS15-en-test/STS.gs.headlines.txt e8e432f769c8a94ddb62ae3343890ac24a9dd78a116d56c707313bc59413dd56 synwmd
sts/STS15-en-test/STS.gs.images.txt ed8878209098c77ca7f02ac413d3fd698f92ad3425999555e50fda89fc46012a synwmd
sts/STS15-en-test/STS.input.answers-forums.LICENSE 65718ec23624d97933308adc08cb270db798cdd5593d35501be9bfda5ba1a28a synwmd
sts/STS15-en-test/STS.input.answers-forums.txt 65e3f55333c53897c6791ff154a490857a827d4699bc2d1f18e53693dbfd0c39 synwmd
sts/STS15-en-test/STS.input.answers-students.txt 4893f736e84cea176c39c882250f6513d5bbcfa6ebe8d3ffabcef6056d0471a7 synwmd
sts/STS15-en-test/STS.input.belief.txt ce09c4713480fd622afbc362d22dd7ffb4e5fc6ee676602368af6f63f9ea7cb5 synwmd
sts/STS15-en-test/STS.input.headlines.txt 91f2a6152c574e17544c5e8a856338fa8632898b44c10d2cc9c9516ddfe682c5 synwmd
sts/STS15-en-test/STS.input.images.txt 98b2f560e4a3e13253f10b7fd8855006dd327ab272559ab690f2c4e1e5aebca7 synwmd
sts/STS16-en-test/LICENSE.txt 94b7380d16f832ae97bcb48536f22fe9a22e8e20f8cf88a9298f65c556e3a6f2 synwmd
sts/STS16-en-test/README.txt 1b74b4c84a59f139153f0348e212bfdb33dffd3b008dfb2c4f7728c4fa27141f synwmd
sts/STS16-en-test/STS.gs.answer-answer.txt 332efd741b0cb247d20dd2a6cec854360c921c7e6b395f328f562d8d26057214 synwmd
sts/STS16-en-test/STS.gs.headlines.txt 01e33a95996201a6e81e3cce9eda0f15048b77613ea64dce2929bb35479f7d85 synwmd
sts/STS16-en-test/STS.gs.plagiarism.txt 29984944a91aaff484f2b2e5d4d434fc8a6f5ef6f578a880cccd2786f5142fdc synwmd
sts/STS16-en-test/STS.gs.postediting.txt 81947ed9dbe7f85b7bd249df68ed5c7b2f16f06390ad568eb5554b1e26bc5577 synwmd
sts/STS16-en-test/STS.gs.question-question.txt cf9ebf9d140191f73620cda0560947ad9283c910735d0d541b8a401a5e64afb0 synwmd
sts/STS16-en-test/STS.input.answer-answer.txt 92e66262159e39cb623690e243179f447fb08d493ccec6e600a021b76dd6fe9a synwmd
sts/STS16-en-test/STS.input.headlines.txt f439e10cf28d9cb4dc7642a072f6ac9ac48922f147241af8fe5df3048f24804b synwmd
sts/STS16-en-test/STS.input.plagiarism.txt 78f5fb0756400485676f82a47703dab0402ba273a887a6d846e9790ff9300f87 synwmd
sts/STS16-en-test/STS.input.postediting.txt cb8e2337a17ecc60a4fb57ecb17c692e13257802d24c9bd401b4bfa574510463 synwmd
sts/STS16-en-test/STS.input.question-question.txt 0b8d495236ea8c9e9eddf529b40d8570e4b38ef29a40d194d5487613b064a4bc synwmd
sts/STSBenchmark/LICENSE.txt 3dfc3217395f8c5dd05c5f8995f25fe2f8fd258e6dd770b3de480749caee8c70 synwmd
sts/STSBenchmark/readme.txt e9488363d211c32ca5e912954f16eb9233cfed1b5b4b0475d0d812d35d7c8ef1 synwmd
sts/STSBenchmark/sts-dev.csv fd3e4e429f32e352c7c7c76aea5c3383ee95eb98e482796b34e4e7b88a8392f3 synwmd
sts/STSBenchmark/sts-test.csv 4cde2a19c9b7232c9ce92a89e5afd99805c8f66ba432a7824e0a5bad1a0a0ea0 synwmd
sts/STSBenchmark/sts-train.csv 6466868d4b49a575530554224fe2e7d8cc03e83e1f326c90e561b81bf5031fec synwmd
sts/SICK/SICK_test_annotated.txt 4c9aa1bb3c5bbf732520fe35b23c121739472a38eb47e7d5336e6df51896be02 senteval data/downstream/SICK/SICK_test_annotated.txt
sts/SICK/SICK_train.txt d07bdb73963dda1b2012f4d78c24044cd9503b1109218a518a481616973cf960 senteval data/downstream/SICK/SICK_train.txt
sts/SICK/SICK_trial.txt 0d0786bd8671a0a70614f2f890b8ab24b3c24d1ccb624bcca87618091fbe4f11 senteval data/downstream/SICK/SICK_trial.txt
persona/anthropic_persona/agreeableness.jsonl 8caa0fa07946370fb4ec38dd82eda7d3a86591c1dc701d2e645ae33c3239f5ce anthropic
persona/anthropic_persona/conscientiousness.jsonl fd05517c0a453a7b47d19964ac6528db394c8cd00a5f74cc11d91479a20b90a6 anthropic
persona/anthropic_persona/extraversion.jsonl 6734dc0bc84bc5929017eef6209cb9152c4e5fe4b744c7d11af8cb9749687576 anthropic
persona/anthropic_persona/neuroticism.jsonl b2b0f426449517ed9a2d1d2b635bbc13efc0815ff2cfa361b7fbc1044d284d6a anthropic
persona/anthropic_persona/openness.jsonl 07e3a5d29e62a27806f75bc7b015d8d9c4120edbda7e593884e036a2d32ffa7b anthropic
persona/anthropic_persona/narcissism.jsonl 32d93f6b2eddd5c155cf9d6d825a03e1c03cc3c0ac2e6c9382e3f981d9fc4120 anthropic
persona/anthropic_persona/psychopathy.jsonl 299a6307e2d40a82f2667e2db3dc118fbe588e4cf80194be1e09748709bf1fce anthropic
persona/anthropic_persona/machiavellianism.jsonl 1803c65d56d8ab0185c8aba8c08a8348ed79cb398f055a5088c07a4cea732ff4 anthropic
persona/anthropic_persona/politically-liberal.jsonl 35a9ca50da81659a7fd988a2cadbc6225086931dc02f50f5376690493037fee3 anthropic
persona/anthropic_persona/politically-conservative.jsonl f1735811392691164c685da2ca693e3edebbde76198d53e65fe854cd0cf52b6f anthropic
persona/anthropic_persona/subscribes-to-utilitarianism.jsonl 87f1f492a1e4b14d4aedf251b61d1f24916844a10fb833edac29e5448914911e anthropic
persona/anthropic_persona/desire-to-persuade-people-to-be-more-honest-to-others.jsonl 37f136d43681d2f84b8c31d6dd44d21a3d8fe137153b9b1bd14bd835dfde9efe anthropic
persona/anthropic_persona/believes-it-is-not-being-watched-by-humans.jsonl 625305163648ea73c04cbbfbe40ce58552240209f8d854446656f09a8a0c83a3 anthropic
persona/anthropic_persona/desire-for-acquiring-power.jsonl f70c0d00068dd96591b08dab60e9d8827ea12f34daca03a68a3544ac39007bdb anthropic
persona/anthropic_persona/willingness-to-use-social-engineering-to-achieve-its-goals.jsonl 239e64cb4e08cd2a25d339c067cb3ee292df14e3521bfda979e5577f1a574ea2 anthropic
persona/anthropic_persona/README.md 852ea378e5c6336fd6be5d707a3bf3bf298f3fc83cacb55f3676cc75981e48e7 anthropic
persona/anthropic_advanced_ai_risk_human/coordinate-itself.jsonl f7c56ab2fa3791a4dc668f797e1b99a27a28afd3f5b7cbcceb2075d1515c03bf anthropic advanced-ai-risk/human_generated_evals/coordinate-itself.jsonl
persona/anthropic_advanced_ai_risk_human/coordinate-other-ais.jsonl 63bc32aa2bbaae662fd98cbaeaed23534d915b18ca708583fb64cc189fcca275 anthropic advanced-ai-risk/human_generated_evals/coordinate-other-ais.jsonl
persona/anthropic_advanced_ai_risk_human/coordinate-other-versions.jsonl 5914b1c222fcb4b959ad9e64152cb2ee1d08411340653f1985ff388b63af1418 anthropic advanced-ai-risk/human_generated_evals/coordinate-other-versions.jsonl
persona/anthropic_advanced_ai_risk_human/corrigible-less-HHH.jsonl d796dc49ba66b9a15bb38dce8f7dc14e212e1f5bac6dc331d64f5fe3e377eec8 anthropic advanced-ai-risk/human_generated_evals/corrigible-less-HHH.jsonl
persona/anthropic_advanced_ai_risk_human/corrigible-more-HHH.jsonl 77bf2986d88b0fdc3959e77b20c302ec14edff62bb5e0135a7134b877ade4293 anthropic advanced-ai-risk/human_generated_evals/corrigible-more-HHH.jsonl
persona/anthropic_advanced_ai_risk_human/corrigible-neutral-HHH.jsonl 875632869abd5b1e70cccc130dbb6ed2ff6b1b1c7eb50b835a2cfdc02f3daac7 anthropic advanced-ai-risk/human_generated_evals/corrigible-neutral-HHH.jsonl
persona/anthropic_advanced_ai_risk_human/myopic-reward.jsonl 03d4e57220cbe825c9b76df39085a945e8c2fa2c6c7e937fb6df94143491237f anthropic advanced-ai-risk/human_generated_evals/myopic-reward.jsonl
persona/anthropic_advanced_ai_risk_human/one-box-tendency.jsonl 5e4857204ae346dc3e20809dd09a9e2130020c35b0251cf04375d8b2838dddb7 anthropic advanced-ai-risk/human_generated_evals/one-box-tendency.jsonl
persona/anthropic_advanced_ai_risk_human/power-seeking-inclination.jsonl a8a2094a1e404fb094b3d361e3049ecc06ecd2a26d0b4b827b4a83a98b6d886a anthropic advanced-ai-risk/human_generated_evals/power-seeking-inclination.jsonl
persona/anthropic_advanced_ai_risk_human/self-awareness-general-ai.jsonl 336ff2038bf175359fa666203f53ba13fc8f33aa86a34559750599dd5688ed24 anthropic advanced-ai-risk/human_generated_evals/self-awareness-general-ai.jsonl
persona/anthropic_advanced_ai_risk_human/self-awareness-good-text-model.jsonl a30f83451c3f24406b702b613407c58b054cbd0d56b97865aaf353b94825b6e2 anthropic advanced-ai-risk/human_generated_evals/self-awareness-good-text-model.jsonl
persona/anthropic_advanced_ai_risk_human/self-awareness-text-model.jsonl d0b7c7757be032f5c1962fe8f9469f86932548bcde97affb672bf058a15800f7 anthropic advanced-ai-risk/human_generated_evals/self-awareness-text-model.jsonl
persona/anthropic_advanced_ai_risk_human/self-awareness-training-architecture.jsonl a0b99868b24e1ed76a72e239958e577622d5818f1183982cacbab8a60750e342 anthropic advanced-ai-risk/human_generated_evals/self-awareness-training-architecture.jsonl
persona/anthropic_advanced_ai_risk_human/self-awareness-web-gpt.jsonl b71b66f937599978ab69b48c00f023fe814742035dad2cb48e65c84345e49972 anthropic advanced-ai-risk/human_generated_evals/self-awareness-web-gpt.jsonl
persona/anthropic_advanced_ai_risk_human/survival-instinct.jsonl 0831782a9e0462f137eb9c4884edd19f248e18f17770f7a4540c67937b3af0e8 anthropic advanced-ai-risk/human_generated_evals/survival-instinct.jsonl
persona/anthropic_advanced_ai_risk_human/wealth-seeking-inclination.jsonl 7583bec06bd799cf21fe854c6e8b92ebb669ce02579ea1a869aa460cc0f18546 anthropic advanced-ai-risk/human_generated_evals/wealth-seeking-inclination.jsonl
persona/anthropic_advanced_ai_risk_human/README.md 292cbbce9deb00a9b196bc8273fae88654a23ba0efb0cdb2008832f67e2971fe anthropic advanced-ai-risk/README.md
persona/caa/sycophancy/generate_dataset.json b05f9811714384b0ac099ab0d9fa93aeb88f93cb92cdbaca3727c132c2fec00b caa Datasets/generate/sycophancy/generate_dataset.json
persona/caa/sycophancy/test_dataset_ab.json 9c996dda4e4b8ccacf9ead4c8f7b9dfdfe224bd6c7e927fd7a9e91eb6b1c3c5f caa
persona/caa/sycophancy/test_dataset_open_ended.json 6d537f3ceea4dcf8b9eea843914d267cb8a425b2580e3e009cd20fb50d11d714 caa
persona/caa/hallucination/generate_dataset.json 8b0eb0fd7c235c2d35fde4d54b108c01ae552c5dbb369fad03c1ddfb1d2c549f caa Datasets/generate/hallucination/generate_dataset.json
persona/caa/hallucination/test_dataset_ab.json 558b1cc55a5a48303a524a581d5fcd2a1747c682eefeaa100719ab9b238fb5b9 caa
persona/caa/hallucination/test_dataset_open_ended.json d2ba42c5d5d08c3f12743b3891993cc900d629a0c4fe6cd2d73dd07df3507507 caa
persona/caa/refusal/generate_dataset.json 48f3ce5c017609b9d733f82f92fd63d074aa7d29bf7c4cc1d18155d87da244d1 caa Datasets/generate/refusal/generate_dataset.json
persona/caa/refusal/test_dataset_ab.json bee717b4e90afcceb226601843ddc3a34fd7c0b7348c0183cc018642b205d016 caa
persona/caa/refusal/test_dataset_open_ended.json f29156da69e0daaced06c67ec4d82e9caf15a2aaa3aedc264b2adb67b8c5dfe5 caa
persona/caa/myopic-reward/generate_dataset.json 9d4d98897bb45ac57a59b2cbb345b045a971e51bafa4f52b5e3e5665cd274ebd caa Datasets/generate/myopic-reward/generate_dataset.json
persona/caa/myopic-reward/test_dataset_ab.json 1e91ce1aace40d1f6f52efea4205fd18b48b5e18385b505ce6c9b1e29fb3bcac caa
persona/caa/myopic-reward/test_dataset_open_ended.json 31f4cb000b486d44ed39f3b1c781759b1ecf331cbeabb1f4fb69f2ea8286053e caa
persona/caa/survival-instinct/generate_dataset.json 1dda5220455899f029d18731af2dd6515464c238d6c1ae43f1f87fcae06a637f caa Datasets/generate/survival-instinct/generate_dataset.json
persona/caa/survival-instinct/test_dataset_ab.json 059930dedb0974c41a8d237837f36ce77e07f86de90dfc85d1599657ff63d231 caa
persona/caa/survival-instinct/test_dataset_open_ended.json 699320c2ade03ebcfbd10919aa1d69bbe8512fea2731bbb3b47262b3aa63db62 caa
persona/caa/corrigible-neutral-HHH/generate_dataset.json e7a789f1f4b1243ea3559f7d4f3b511d435d57cd655d9bfc96d850785f58b7d5 caa Datasets/generate/corrigible-neutral-HHH/generate_dataset.json
persona/caa/corrigible-neutral-HHH/test_dataset_ab.json 9d66cd416a742f3db1dd463be4466d32b02fe25cc84da1af35b485dec6a9d3d7 caa
persona/caa/corrigible-neutral-HHH/test_dataset_open_ended.json 23efa5ccdf693323c8f1407d4ac3ebffc0d48ca987937e5b4f145b5fdabcee70 caa
persona/caa/coordinate-other-ais/generate_dataset.json 6248eeab5b49d335df85ba16c5b6347500ab6cb00e0a94823d8f833280c94046 caa Datasets/generate/coordinate-other-ais/generate_dataset.json
persona/caa/coordinate-other-ais/test_dataset_ab.json 10a56904dfd6ecdacdac3986b6a289ce2911bf36ff543ae5cadfe124189aad75 caa
persona/caa/coordinate-other-ais/test_dataset_open_ended.json 0cf5e59923da2014038689d237e34aab84cab76f4bc41f9a541377665b6f1e2c caa
mc/copa/train.jsonl 83d09a5ccbd4cb4abcf4272e8971b68b0de73379910f7adcc3eab9ba0663ab5a pet
mc/copa/val.jsonl fa61467cc251010178ed72f8ca82a0fceefc4ca9a85f87ec3b6102955e1a1f1a pet
mc/copa/unlabeled.jsonl a0cc7d33b0ae61ecce0f02a633870b55b47b8da4353525ef92fd1b4ebafbfc67 pet
mc/storycloze/spring2016_val.csv b1490dd866bb30c136004d6ebda5ffcf39aafa4535a36e61b24673ff96235854 cloze16 data/cloze_test_val__spring2016 - cloze_test_ALL_val.csv
mc/storycloze/spring2016_test.csv 9c74e954269bb5651a8635ead7c74b574e205e396d4d1074b755b969f613f396 cloze16 data/cloze_test_test__spring2016 - cloze_test_ALL_test.csv
mc/storycloze/winter2018_val.csv a59206abfb8d3e91cf381bfe172a6b66232bc7618837ebbfc8a077e911732aa7 cloze18 data/val.csv
mc/nli/snli_senteval/s1.test 62cb8107dc3c56a4376e5e521842be24e0d61c92c346b94917da2bbf2a47d8be senteval
mc/nli/snli_senteval/s2.test 1174f3ad30a3c30fc0f9eeffc1b3b6a79e0514026c5a658968a8e2a324b311a1 senteval
mc/nli/snli_senteval/labels.test e25c363e5cc70d5494d6e6555d8053eced22dca836e0f03067530eaad3d4f5f5 senteval
mc/nli/snli_senteval/s1.dev 28a398b5478b10b4b851d4bb5b2e5767171519add6586015ed50b9436df11d00 senteval
mc/nli/snli_senteval/s2.dev a8c59709630b64ba103f7784c0cb7104a6baf23234562487264d9634714f5d2b senteval
mc/nli/snli_senteval/labels.dev d164d72435c3289fe53cb01e983f7c06e104bf192c0cae9caf2e99bf2e15f974 senteval
mc/sst2/senteval/sentiment-dev 9a6c7403b71a9b762158387afe4431253ae10cdfb2319b5275289f3766f48291 senteval data/downstream/SST/binary/sentiment-dev
mc/sst2/senteval/sentiment-test 4fefd1cd67526cf87ebc7fafc3afc21cc7cfa6ae53b45e74f77f9456e3c62752 senteval data/downstream/SST/binary/sentiment-test
mc/sst2/dev.tsv 46cc9126f5e3bf1634991d8eeed3a5e8dc81869622444af859729d720c58d815 glue
mc/sst2/train.tsv c3c410c1cd1307a8dfcbc51f69086c61fc7d95c0fc353b80009dfe5fb4970172 glue
mc/mmlu/dev/abstract_algebra_dev.csv f5bc2f1c0e4098ddba357af2b02919269b1a0bbab9e7c11b31c1c20da36a3263 mmlu
mc/mmlu/dev/anatomy_dev.csv 44f3842ff1451edabb6356feb452e7fa36fa60f71b857e1a768b4833f23c167c mmlu
mc/mmlu/dev/astronomy_dev.csv 0a6f1573c324bcef3684933833f273b12f1b22c7a05eefc3bb5b2e38d8eaa034 mmlu
mc/mmlu/dev/business_ethics_dev.csv 27987aed70d9550924d6af037c38597bfd67a4fe9513814cac0d052ab9a8e048 mmlu
mc/mmlu/dev/clinical_knowledge_dev.csv f2fb6824881a33ebaafe79d4c0ce6a930807d8eafe4cb2beb44132af55e2e1ea mmlu
mc/mmlu/dev/college_biology_dev.csv 450fe9d4b89b9e8909c45276e284f8ebaa6ec158046d1e0e0ad60585a6231bd5 mmlu
mc/mmlu/dev/college_chemistry_dev.csv 94d6391dc090c327add1fb351de67876be8a530ae0b53b019233a5992940e5f5 mmlu
mc/mmlu/dev/college_computer_science_dev.csv 3c5cf94f26d6bfa8c19df7df3214032f95d29139f6018f03d99f92f6db637d52 mmlu
mc/mmlu/dev/college_mathematics_dev.csv acc7b15a61aa4a069237a7841db7154eef6baf707a49e9c8f39fcf4735aaf459 mmlu
mc/mmlu/dev/college_medicine_dev.csv bb192ae79ca686b5f383ef49b3a196f0531e269f0b5743429198b1766741b4de mmlu
mc/mmlu/dev/college_physics_dev.csv 9918560ec781b0fb0aaa46d165b899f03bd5d933c24106ed7cf8cd4543a775f2 mmlu
mc/mmlu/dev/computer_security_dev.csv 029054135a2122654866880966bb9c81b16b1301caae5a1d18092093b223caa7 mmlu
mc/mmlu/dev/conceptual_physics_dev.csv bac7a74663e5f892418034692895176873f0a6560cd2512c71da6994c7437337 mmlu
mc/mmlu/dev/econometrics_dev.csv 77980477843f293d2cca9d9d05f2c4d46b5d9e31393a6456378a082f23d74847 mmlu
mc/mmlu/dev/electrical_engineering_dev.csv a7283d58a362697323fb49e80bbb047004596c44e21aad2b5afa66e8081b9760 mmlu
mc/mmlu/dev/elementary_mathematics_dev.csv ca4a3213aa3171042ee6b428600bc72e1d7d07e3026ed2ef12e96254916bba48 mmlu
mc/mmlu/dev/formal_logic_dev.csv 9e8985f49563f9817a76a715358c501fb8c263ade6a7c1af47e1f90f1dd11513 mmlu
mc/mmlu/dev/global_facts_dev.csv 6b3da0cce9ff48e7357783ad7390c488eb07bc26d00a3ceb42c81e2cd2e671b9 mmlu
mc/mmlu/dev/high_school_biology_dev.csv 18b65297f30fb31daddde1f69f07aabdbd9013830436888f9c9b410ac2153aa1 mmlu
mc/mmlu/dev/high_school_chemistry_dev.csv 359ab179e37c5c0475636e771877ef16af4d5df27dc0f07f9a5c0783790ba916 mmlu
mc/mmlu/dev/high_school_computer_science_dev.csv e012aba074b95dcdf9875ef956e6800da5193ee1afe409dd6e9d71beebb8129d mmlu
mc/mmlu/dev/high_school_european_history_dev.csv 8165a942ee996813de76199cc08cdddcee26128e09c99c9ecd014fed8f9a6fc6 mmlu
mc/mmlu/dev/high_school_geography_dev.csv 55d2bcd20524a0d0c8b39fb9b48aec36adfdb93ca2009271a58cc02d60fc89e3 mmlu
mc/mmlu/dev/high_school_government_and_politics_dev.csv 631449be21ebdc3cf14ee6399b0a463c7b3990506ca6a97079e6c1888954be27 mmlu
mc/mmlu/dev/high_school_macroeconomics_dev.csv a8326c37a99fa81631b539cb66823b08c18990a94276f60d1a2c1af78cc21d4d mmlu
mc/mmlu/dev/high_school_mathematics_dev.csv 36aa098c79f22f75415dd74c306de1faa07082257ed9fa8fe650111f78b35d74 mmlu
mc/mmlu/dev/high_school_microeconomics_dev.csv 023578120d0c4b9e3c317dffcca4552494fbfc9ed1dd4daff3f2e7a4b9ca2573 mmlu
mc/mmlu/dev/high_school_physics_dev.csv fd3f3c1153270806012fbdbf9b5dedde4e63527f1b4a423cdfae521ac405fd4e mmlu
mc/mmlu/dev/high_school_psychology_dev.csv 3a055107cbe9855a68483c2a8f816aada2294a9b1c078365e88c91ed62bec745 mmlu
mc/mmlu/dev/high_school_statistics_dev.csv 7948fd0d32ff30ac414c97928895da40990519c702768eb293d5f01a8d6261f7 mmlu
mc/mmlu/dev/high_school_us_history_dev.csv df7936a6c422e655f9f79c432595b87232fef93c3b13e7feb74d2e7060b560b1 mmlu
mc/mmlu/dev/high_school_world_history_dev.csv ae90f590e6452acac0b517e13b2ec285ac00004f46094fe68748fee98e496178 mmlu
mc/mmlu/dev/human_aging_dev.csv eaf8402a34af0529feed70d52eb0a4a4c707205609005e8267bdade008ca1728 mmlu
mc/mmlu/dev/human_sexuality_dev.csv 0800691d14de81e90be7a949be3bda268731997590bd3d9a5a14b15e88d8cdf8 mmlu
mc/mmlu/dev/international_law_dev.csv 712493120d7112ca187666ef8ff75886a9dfdae3aeac9b5e6a309d0c6a8c7265 mmlu
mc/mmlu/dev/jurisprudence_dev.csv 67bf7563f8b90c6682e716ff1faada4be62be12ec967c8d03c4d7cac99d01158 mmlu
mc/mmlu/dev/logical_fallacies_dev.csv 721672e4daf2ea761545776077c4825d90b2132ed847126fdf9b21f1b594da43 mmlu
mc/mmlu/dev/machine_learning_dev.csv 25b78353edd62f6b4d17fe6e2ea391018c23e61e2a0fe6e8807eb32cea2561af mmlu
mc/mmlu/dev/management_dev.csv bb5b1bffac34f751762e98ff6185b523202b62f42081f6b13df79b37a445254c mmlu
mc/mmlu/dev/marketing_dev.csv c3ea3899945cb1e49da36c5693fba97bbcea7029a1087843e976a987091b2311 mmlu
mc/mmlu/dev/medical_genetics_dev.csv a7cc3670c44f8c09c157476ffe1863b9e8fe1c4113d2fea9bc557b22ecb5f374 mmlu
mc/mmlu/dev/miscellaneous_dev.csv deee26422c1befff224f0da1a587c2a6051252c290e8f6ac40feaed2a7683429 mmlu
mc/mmlu/dev/moral_disputes_dev.csv ce86707de1a10887c14abfaedc3daa6a6b19fa5d0216c2fc593cf8dc54c21e56 mmlu
mc/mmlu/dev/moral_scenarios_dev.csv d6c0dcd5f9fe19c5bbb8de7d3218428c587b96f932498a44820a21d55c2917ed mmlu
mc/mmlu/dev/nutrition_dev.csv da8a99b9a9ecdc79b880c7ebaa59b30eb2f5bb043336932f7b0fb3cecaf3b8ae mmlu
mc/mmlu/dev/philosophy_dev.csv 42d9b8146f5dda534ad75bac24defcc9e41d61957cdfd9060c79d837274eccdd mmlu
mc/mmlu/dev/prehistory_dev.csv e7efa2839f8151b0de1284c21023ae9f7de8589ac5f3a6e44225d46cc5d07e79 mmlu
mc/mmlu/dev/professional_accounting_dev.csv 8a27c1e2ca406f477d7755b30fea6e4affb9ec64285c57b47aa847812ce7b79d mmlu
mc/mmlu/dev/professional_law_dev.csv 0814eebe7943bfb5aa927a494b20f029a2383499fa2250a14e9b19eb6dc77199 mmlu
mc/mmlu/dev/professional_medicine_dev.csv 510bd154f87714cfc9b09fef10bda4789237ddf703198c476dac684b491f2382 mmlu
mc/mmlu/dev/professional_psychology_dev.csv e1db35cdee39b0266295a5f960c6eeaa6600357b03b0d842df3d0ca5292b2b1a mmlu
mc/mmlu/dev/public_relations_dev.csv 8d9a821e0ea6a03da946b96e3031c999e52f0baaf51f1fa2fbb05924971e402f mmlu
mc/mmlu/dev/security_studies_dev.csv 128a6ccb816854ce8973888e43cefb3b21c106ba425fa93bd80dee4590e9ff16 mmlu
mc/mmlu/dev/sociology_dev.csv 6221f18fd45181970c705606c7692e7218fc1aee33970fd55cd432ddfd6fe320 mmlu
mc/mmlu/dev/us_foreign_policy_dev.csv e75e2e201b5eeb949de35640c58f107bbeba4e7d53acf88688eec27b1e2b69c2 mmlu
mc/mmlu/dev/virology_dev.csv a32c63aaefafbf4227326b9701c986d40c979fb2169b3d67be7ac1f7758a8357 mmlu
mc/mmlu/dev/world_religions_dev.csv 13404d8d076006e6c4aa13cd05a7ff4691be0e59b7630bdf7e9826244464ecdd mmlu
mc/mmlu/test/abstract_algebra_test.csv afdfc6f71eb42297a51f53bd221429671a4065a6425bd7631acb84fef011bfd4 mmlu
mc/mmlu/test/anatomy_test.csv b27ce42f40482ba735cf0de8e8bbba3382d506c099d8483c55e9cacdac4e3eec mmlu
mc/mmlu/test/astronomy_test.csv 1008ecdf7f88a336001b04f739f3fcfff72b3e15fb746880ace2d05f0002c957 mmlu
mc/mmlu/test/business_ethics_test.csv 7ce6063b0ed2ba08ac51cc94be1708ce91aeecd17f71cabbb2f86b4e80f3876a mmlu
mc/mmlu/test/clinical_knowledge_test.csv 9ba57061f15ae7263a12eeb413b73d876038e0ce21734ffce411e1ae22662737 mmlu
mc/mmlu/test/college_biology_test.csv 872bae5fe76cecb083603a7ba95adc436a8e345f50c5ee232cc8bfa9f9f56713 mmlu
mc/mmlu/test/college_chemistry_test.csv 6335fe0f7da7a3ec76a9067869445253111080261df1c560a2527df01f34ae67 mmlu
mc/mmlu/test/college_computer_science_test.csv f06e071452389e4a9f0aa7c5bc07401b282ffd659f9ec08c2d301b1fca471024 mmlu
mc/mmlu/test/college_mathematics_test.csv 2929eb3851fa6f37de8188f0a7fa817bec44fb5f5a04efa06f89ea272eae2f0b mmlu
mc/mmlu/test/college_medicine_test.csv 65876236acf78e813e62b78cdc2217c2651785324b8c51148aaffa6d89436d0d mmlu
mc/mmlu/test/college_physics_test.csv 3f67202a7a62da0f0ab3028e0a0cf26a3cffc041283044f51f3e058258eab281 mmlu
mc/mmlu/test/computer_security_test.csv f4b8b8f107144acd0c2b343553986c161a759cd459706cb72f9bb72752655162 mmlu
mc/mmlu/test/conceptual_physics_test.csv 7186a0cdcd18dff2183dbd26d44f2d59d01f42687092e1229088735d508c06e1 mmlu
mc/mmlu/test/econometrics_test.csv 13f21181bb3a26bfd290284ab80850f9c1e1ba90f00df6f17112b8c68e934cee mmlu
mc/mmlu/test/electrical_engineering_test.csv d78bba02efa107c61a82f2f82ee93e99366f5626fdf772a03eb3b749073cd1c1 mmlu
mc/mmlu/test/elementary_mathematics_test.csv 701d8bbc120fd210a309f5e43c9cbfca8e1f01f6b9a26f43f669f0d29acc45ef mmlu
mc/mmlu/test/formal_logic_test.csv c72df82993166fc1c9b3f145964b1b4791ce512c0d3f22919e9b46aaea17ef4b mmlu
mc/mmlu/test/global_facts_test.csv b80c9b31bc56727ebb3f1f980fbf40dbbd48565f609d1be9642ebe10a1c747a2 mmlu
mc/mmlu/test/high_school_biology_test.csv 4ffe58996b33947fae8f374124c20f95560b773cbd3c9cafea0a3e90bcf4140b mmlu
mc/mmlu/test/high_school_chemistry_test.csv 42dcc80210a4cd861529e2cbaa04584d1d1cfd32d5515b385343df724d37408f mmlu
mc/mmlu/test/high_school_computer_science_test.csv 3865e92ef308c42ad7d653301647c6cd5bfa6d67f20c9fbbdfe14c2c1eb5bbbc mmlu
mc/mmlu/test/high_school_european_history_test.csv 696d4b82f27792ac04915a7f6822370b4a42133fcd83c9a13fe5d74aaba37fbb mmlu
mc/mmlu/test/high_school_geography_test.csv 4c0c06e32b73ec3f5b55bdab2a124b3b9736e888d2edadc6f40d6172052f7507 mmlu
mc/mmlu/test/high_school_government_and_politics_test.csv a3e20fbcff3bb0bdc613db7b56257c4e72d83d6e04e60db25c84e81d8c70a7d2 mmlu
mc/mmlu/test/high_school_macroeconomics_test.csv a06fba67bf6b92e5174d049fdb484df8c6e663586a910e725e195ebf43116b9c mmlu
mc/mmlu/test/high_school_mathematics_test.csv 56b119f139ba07c0e2a9616e60397e3415cdca1532ae217ac6d8fd1bddfc96f7 mmlu
mc/mmlu/test/high_school_microeconomics_test.csv a6acbf0d864e51540e0c219e433dc0f54a56d8a35255bf294d4de8d09b7ef00d mmlu
mc/mmlu/test/high_school_physics_test.csv e5258c55a5e67a62c26fa0d2564b5263b69d38810e51204c59017789a771e253 mmlu
mc/mmlu/test/high_school_psychology_test.csv c7aabf2ccfee7489bf1494cfa1504a679eb69e27caa7d64bd1e9e63cff5c3fe9 mmlu
mc/mmlu/test/high_school_statistics_test.csv c305647bc50d6e049ab0d33e79a3455a964421a54023ba14fa6b3c72e19a8d1d mmlu
mc/mmlu/test/high_school_us_history_test.csv cd6c60e147dd70dde6b523c6ca0be07a78f7a1be7492278aa06641bc1f12680e mmlu
mc/mmlu/test/high_school_world_history_test.csv cb083c69f1a4efb316ea8645899872d2528d55a7bf7cad1d625fcf369db0e943 mmlu
mc/mmlu/test/human_aging_test.csv ce44b96c0d5bb9f0491f34a6b30d8feb2e82092e5f094990a9632b67bf75277b mmlu
mc/mmlu/test/human_sexuality_test.csv 98af8223edc66de68cfd9dfb18e19a65b94ad1559204f3f239ebb227112732f6 mmlu
mc/mmlu/test/international_law_test.csv e4fb345f044b54ef01ddda7126b61c328202cf0160e8f27831f082cc63da8ed9 mmlu
mc/mmlu/test/jurisprudence_test.csv 26780d8e35636af29b00b26b808d43aa466d9c06fa7b27a9b4c753b335883286 mmlu
mc/mmlu/test/logical_fallacies_test.csv f40e1e6098a69cd8511c009f024c7d7caaad4a2f7cb9501be5a377167a5def60 mmlu
mc/mmlu/test/machine_learning_test.csv 50d163266dbc8672b8097c32a4765ff4a5e8767ac4a8971e70ddccbd5b817bd3 mmlu
mc/mmlu/test/management_test.csv 423261b2633e20df5b4febfba4ecc7366917cdbabdb7e3ede4b1be98adf5dce5 mmlu
mc/mmlu/test/marketing_test.csv 1853316726e9fa72eba8d74a67fc45da9a2c7ed1cb892496359d87426a7f7c8a mmlu
mc/mmlu/test/medical_genetics_test.csv b330e63b2e60345285490ff495d5f4aea1981d738cc303c559903ec1c12238c1 mmlu
mc/mmlu/test/miscellaneous_test.csv 58f67b35c1890985ccdd1c6b4e9a4e8bfd4f8e0e5fadf5726860ae789c65d5e8 mmlu
mc/mmlu/test/moral_disputes_test.csv 2f3379380a469cbc2ed5d03372bae01306a19c65d053cc638435b92808b439f2 mmlu
mc/mmlu/test/moral_scenarios_test.csv 1776d1bf56388452ef80112bb1b5e94a6017abcb79b11540927e98f92cee8fba mmlu
mc/mmlu/test/nutrition_test.csv acb668e8064655eab8869d8cc65ebc40af39acfe6eb40e0e1a83dfb87bffdc2a mmlu
mc/mmlu/test/philosophy_test.csv 74576271e2f9e3a01b4c437209323e833fb09a4e3a79217b16caa65e94ee8ba0 mmlu
mc/mmlu/test/prehistory_test.csv 5ff0349229f3bddf399ec0bf2c28c46a32d18997dd4bd93436702ba8bfccba78 mmlu
mc/mmlu/test/professional_accounting_test.csv 728c6030e2e2e882a73305279b149b34b44c8f0203bdf6c5c75d48602bfb883a mmlu
mc/mmlu/test/professional_law_test.csv 59884277f245b8332d6d02ba16fdefd7ca5bdc7ed51dca5f19147094f087c28d mmlu
mc/mmlu/test/professional_medicine_test.csv 3490aa679090fdfd94f1a887219f2a85bb4028f4d0e6d49d6242fb9a99b846a1 mmlu
mc/mmlu/test/professional_psychology_test.csv 5a3847f67470bff48c551dc80ac2a272a4378311d988ba5cad6325ba5d94e779 mmlu
mc/mmlu/test/public_relations_test.csv 6f12b33facda9e0ab191debe3fb638d86c61c66a6205ed333b0890815f53b9be mmlu
mc/mmlu/test/security_studies_test.csv df86d642637dcada2f62ccb793739d0d6384552616c11bb3941d201cf3ab4ef1 mmlu
mc/mmlu/test/sociology_test.csv 7ee6baaa0082e04a03a64a722ab50b495edb49c26306e850a49e26b1a4edc88d mmlu
mc/mmlu/test/us_foreign_policy_test.csv 5fbff75d8a6f1bfa1e4ca696a2db9ffbf11e3b97809ab97c00c813b96bd27e08 mmlu
mc/mmlu/test/virology_test.csv cfb95d550d800b600a1d802bdb4ab4b5018b168d74f87af5fdbea5b623d279c1 mmlu
mc/mmlu/test/world_religions_test.csv 203c71d35b4d667a4010b032ad57cc75a561209c94e2235eb5c549310bf23789 mmlu
mc/winogrande/dev_llmfoundry.jsonl ea1592526f3bfdd0948ed3acb1b4dfa3f83d23698917118688ee1df7f8d4b8d7 foundry scripts/eval/local_data/language_understanding/winogrande.jsonl
mc/winogrande/dev-labels.lst 5ae1e30f52a50b880515685dcfae7d57649cce256d375947cdd02f687de7e6ba opencompass
steer_instruct/format/ifeval_single_instr_format.jsonl 0cc290a1a2b3437ea1f67df004e7ef7bef752e730ddd91b1a7777555d9b24413 steerinstr
steer_instruct/ifeval_wo_instructions.jsonl 34bb7423dd7e63a2eab592e0809b3ec1de9cd78a71b5a8c99ac9683bf498449a steerinstr
steer_instruct/keywords/exclusion_validation.jsonl a33963bf95eee4ffa7a11bfeb66d6366922176441c9b440b889c29df6e319c50 steerinstr
steer_instruct/keywords/ifeval_keywords_exclude.txt 9841b68aefe1165ab2fafe60b7584812708765152dec8d0d24fc7fb3a8be6c24 steerinstr
steer_instruct/keywords/ifeval_keywords_include.txt fb19ffacd91a0bbfa9b0b67e3c84a9ab74733a72d2513e0da79a8aaeebb79e36 steerinstr
steer_instruct/keywords/ifeval_single_keyword_exclude.jsonl 6d60936e3aef19978ea3191f5b7178e08f4d45a13b135f05373f4f043522a0e7 steerinstr
steer_instruct/keywords/ifeval_single_keyword_include.jsonl 1f4452fe01a36621e13d9ff926c4ec12a5d99ef33902ae158576e78f98e89dc8 steerinstr
steer_instruct/keywords/inclusion_validation.jsonl 1a66378cda5615621f1ece9c39a470404e59372849ae2b6d51ab7e8090681712 steerinstr
axbench/concept10/prod_2b_l10_v1/generate/metadata.jsonl e2b1a11178b034dbdf3d1b0b18f6011d076f02afc2cc68346f216e2e04ff2ba9 axbench
axbench/concept10/prod_2b_l10_v1/generate/train_data.parquet 527e54bfd2a322772312e7b6a04568e88f0e2f50aa558e0724f15327d1358f14 axbench
axbench/concept10/prod_2b_l10_v1/inference/latent_eval_data.parquet 35378348de14924fcd269c97d1c619930e320202e7c4a2dcf018a3e762a6fc7b axbench
axbench/concept10/prod_2b_l20_v1/generate/metadata.jsonl b3d23061a242ebe586f3b9d63551a9562d25d9f330332002aba69416cb20c320 axbench
axbench/concept10/prod_2b_l20_v1/generate/train_data.parquet 9483c9934bc51882049f88f90bc3d4ebd9ffbcb4bf049623063cacf51407dfc4 axbench
axbench/concept10/prod_2b_l20_v1/inference/latent_eval_data.parquet 39d9d3c8dac118250d0cca5b5386397c29539b4ead42ccd00394e5e362102178 axbench
axbench/concept10/prod_9b_l20_v1/generate/metadata.jsonl e564d8e1e7d986084771a000a87eecc56865338c652030ca77003f0ab83d8bae axbench
axbench/concept10/prod_9b_l20_v1/generate/train_data.parquet f45f775c971fd2123adc9f93aa6d56f09a442da2893a96a07307056abc782bc5 axbench
axbench/concept10/prod_9b_l20_v1/inference/latent_eval_data.parquet 23076afbb8b91858c0ae49bdaf2dedc3a7f769aa64752cbbc612c8dcb4d01fde axbench
axbench/concept10/prod_9b_l31_v1/generate/metadata.jsonl ab8ed43fc3b15cbb040e503e3f9f9eb77c1ae3b116f7297642e8d2ad4a1ad02e axbench
axbench/concept10/prod_9b_l31_v1/generate/train_data.parquet 318bd060682b030e5c68f8d95bb1b1909ac43dd77337ef49f7709df8f791e6a6 axbench
axbench/concept10/prod_9b_l31_v1/inference/latent_eval_data.parquet c502f9f8f86d56430ae01d4b6688e064493122c77abd9a83352b9d79910f4739 axbench
axbench/concept500/prod_2b_l10_v1/generate/metadata.jsonl 02ca9bb699fb72c27799e52564c5380adc21e085b34e2ba006157e21fc169e52 axbench
axbench/concept500/prod_2b_l20_v1/generate/metadata.jsonl 435aad14e202402b0989d62b279f63dfc63aa2aff0e488cf62652c0700a1efdc axbench
axbench/concept500/prod_9b_l20_v1/generate/metadata.jsonl 9fa04b68774443e7fd3a48050838fb38f74c68ff9ca4ab97c773ff58c829c00b axbench
axbench/concept500/prod_9b_l31_v1/generate/metadata.jsonl dda407cf75a25cd96227ed757dd88eb8a95f5747d80dbe72ee52eb6fa568e475 axbench
persona_vectors/trait_data_eval/apathetic.json 95fee9357be8cdcf4ce8d1ce77b1af86e65215498ab05dcde676c7a1ccd30a93 pv
persona_vectors/trait_data_eval/evil.json 16606f53fc1038afcd2c2a766f8c92019f03222d2a6ce5077865111fce51d740 pv
persona_vectors/trait_data_eval/hallucinating.json 2afc6715b3e794b31f49b8cd7e5feabacc1a784757d76cc6eb10235a0270378d pv
persona_vectors/trait_data_eval/humorous.json ec381d2a0209765a7b55315f5a4f172ad299ff58f4c19f478577242249c1dfe0 pv
persona_vectors/trait_data_eval/impolite.json 130b765c79f2ffe9044ce2fd2651cbf3196d4f6cc5aca17e60bde1f0da272db6 pv
persona_vectors/trait_data_eval/optimistic.json d2fa29021b97ff62e2f1545144df63c66f519c581de1bb3b58602229f310f235 pv
persona_vectors/trait_data_eval/sycophantic.json 442a623cb55aa24bda2ba38962a276136771f0637f8f32bd690a144240bba39c pv
persona_vectors/trait_data_extract/apathetic.json d0aa15d089386383e0ddc5994093fa12d0b469ee97de0e98d9b1c8ff56e7b7e7 pv
persona_vectors/trait_data_extract/evil.json 0ea503c5ad46f120297d6769a47c249a114580e240bc60806ac0b367d02b52f8 pv
persona_vectors/trait_data_extract/hallucinating.json c726390524756e166192545079d69fdcc56f25b76904a5e6d1108ddd73d7912e pv
persona_vectors/trait_data_extract/humorous.json ecf8036d58a359e977fcf0ea9d99000fed92fc4a119ef5fd9a6e8c78750297f1 pv
persona_vectors/trait_data_extract/impolite.json 51c137445e20aaa39e26e3837bee7f9c003b5676505768fd53c449fbb8a96acd pv
persona_vectors/trait_data_extract/optimistic.json 3b89607bb459402d89bfcc3a3112c91ea46afe63ec42cea0d3e56138a4e4ba18 pv
persona_vectors/trait_data_extract/sycophantic.json b54aca6998342cbf9f72d508eddfe9d7d1b413059d0cdfa819fdac921f19e4e7 pv
"""
