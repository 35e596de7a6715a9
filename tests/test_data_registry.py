"""Dataset registry: names, resolution order, errors, checksum-verified download, malformed rows."""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import pytest

from steerlab.data import DataNotFoundError
from steerlab.data import download as dl
from steerlab.data.records import COPAItem, MalformedDataError, MalformedRowsWarning, parse_rows
from steerlab.data.registry import (
    dataset_names,
    get_spec,
    load_dataset,
    remote_file,
    resolve_dataset,
    subsample,
    verify_dataset,
)


@pytest.fixture()
def isolated(monkeypatch, tmp_path):
    """No $STEERLAB_DATA, an empty cache in tmp, downloads off, no mirror."""
    monkeypatch.delenv("STEERLAB_DATA", raising=False)
    monkeypatch.delenv("STEERLAB_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.delenv("STEERLAB_DATA_MIRROR", raising=False)
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_names_cover_the_issue():
    names = set(dataset_names())
    for n in ["truthfulqa", "truthfulqa_mc", "copa", "storycloze", "snli", "mmlu", "sst2", "winogrande",
              "sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sick", "ifeval_format",
              "persona/narcissism", "caa/sycophancy", "ai_risk/survival-instinct", "persona_vectors/evil"]:
        assert n in names, n
    assert len([n for n in names if n.startswith("persona/")]) == 15
    assert len([n for n in names if n.startswith("caa/")]) == 7
    spec = get_spec("copa")
    assert spec.split_name(None) == "val" and spec.split_name("validation") == "val"
    with pytest.raises(ValueError, match="splits"):
        spec.split_name("nope")
    with pytest.raises(KeyError, match="unknown dataset"):
        get_spec("coppa")
    # a trait that is not in the table still gets a spec (no checksum, no download source)
    extra = get_spec("persona/some-new-trait")
    assert extra.files() == ("persona/anthropic_persona/some-new-trait.jsonl",)
    assert remote_file(extra.files()[0]).urls == ()


def test_every_file_has_a_pinned_checksum_and_source():
    for name in dataset_names():
        spec = get_spec(name)
        for split in spec.splits:
            for f in spec.remote_files(split):
                assert f.sha256 and len(f.sha256) == 64, (name, f.relpath)
                assert f.urls and f.urls[-1].startswith("https://raw.githubusercontent.com/"), f.relpath
    tqa = remote_file("truthfulqa/TruthfulQA.csv")
    assert "sylinrl/TruthfulQA" in tqa.urls[0] and "39e91d49" in tqa.urls[-1]
    assert "%20-%20" in remote_file("mc/storycloze/spring2016_val.csv").urls[-1]


def test_explicit_root_then_env_then_cache(isolated, data_dir, monkeypatch):
    # explicit root wins and is authoritative
    assert resolve_dataset("copa", root=data_dir) == data_dir
    with pytest.raises(DataNotFoundError, match="given root"):
        resolve_dataset("copa", root=isolated)
    # then $STEERLAB_DATA
    monkeypatch.setenv("STEERLAB_DATA", str(data_dir))
    assert resolve_dataset("copa") == data_dir
    # then the cache, when the env dir lacks the dataset
    monkeypatch.setenv("STEERLAB_DATA", str(isolated))
    cache = dl.cache_data_dir()
    assert cache == isolated / "cache" / "data"
    (cache / "mc" / "copa").mkdir(parents=True)
    shutil.copy(data_dir / "mc/copa/val.jsonl", cache / "mc/copa/val.jsonl")
    assert resolve_dataset("copa") == cache
    items = load_dataset("copa")
    assert len(items) == 100 and isinstance(items[0], COPAItem)


def test_not_found_error_says_where_and_how(isolated):
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("copa")
    msg = str(e.value)
    assert "$STEERLAB_DATA: not set" in msg
    assert str(isolated / "cache" / "data") in msg
    assert "mc/copa/val.jsonl" in msg
    assert "allow_download=True" in msg and "STEERLAB_ALLOW_DOWNLOAD=1" in msg
    assert isinstance(e.value, FileNotFoundError)
    with pytest.raises(DataNotFoundError, match="turned off"):
        load_dataset("copa", allow_download=False)


def test_download_from_file_mirror_verifies_checksums(isolated, data_dir, monkeypatch):
    monkeypatch.setenv("STEERLAB_DATA_MIRROR", data_dir.resolve().as_uri())
    calls: list[str] = []

    def fetch(url, dest, sha256, timeout):
        calls.append(url)
        if not url.startswith("file://"):
            raise OSError("offline")  # the network URLs after the mirror are never reached
        return dl.fetch_url(url, dest, sha256, timeout)

    root = resolve_dataset("caa/sycophancy", allow_download=True, fetch=fetch)
    assert root == dl.cache_data_dir()
    assert calls == [data_dir.resolve().as_uri() + "/persona/caa/sycophancy/test_dataset_ab.json"]
    assert verify_dataset("caa/sycophancy") == {"persona/caa/sycophancy/test_dataset_ab.json": True}
    # the env switch works too, and a second load does not download again
    monkeypatch.setenv("STEERLAB_ALLOW_DOWNLOAD", "1")
    assert len(load_dataset("caa/sycophancy")) == 50
    assert len(calls) == 1


def test_download_refuses_a_bad_checksum(isolated, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "mc/copa").mkdir(parents=True)
    (mirror / "mc/copa/val.jsonl").write_text('{"not": "copa"}\n')
    monkeypatch.setenv("STEERLAB_DATA_MIRROR", mirror.as_uri())

    def offline_after_mirror(url, dest, sha256, timeout):
        if not url.startswith("file://"):
            raise OSError("offline")
        return dl.fetch_url(url, dest, sha256, timeout)

    with pytest.raises(dl.DownloadError) as e:
        resolve_dataset("copa", allow_download=True, fetch=offline_after_mirror)
    assert "sha256 mismatch" in str(e.value) and "offline" in str(e.value)
    cache = dl.cache_data_dir()
    assert not (cache / "mc/copa/val.jsonl").exists()
    assert not list(cache.rglob("*.part"))  # no partial file left behind


def test_fetch_url_file_scheme(tmp_path):
    src = tmp_path / "src.txt"
    src.write_bytes(b"hello steerlab\n")
    sha = hashlib.sha256(b"hello steerlab\n").hexdigest()
    out = dl.fetch_url(src.as_uri(), tmp_path / "a" / "b.txt", sha)
    assert out.read_bytes() == b"hello steerlab\n"
    with pytest.raises(dl.ChecksumError):
        dl.fetch_url(src.as_uri(), tmp_path / "c.txt", "0" * 64)
    assert not (tmp_path / "c.txt").exists() and not list(tmp_path.glob("c.txt.*"))
    f = dl.RemoteFile("x/y.txt", sha, (src.as_uri(),))
    assert dl.download_files([f], tmp_path / "root")[0].read_bytes() == b"hello steerlab\n"


def test_downloads_allowed_env(monkeypatch):
    monkeypatch.delenv("STEERLAB_ALLOW_DOWNLOAD", raising=False)
    assert not dl.downloads_allowed()
    monkeypatch.setenv("STEERLAB_ALLOW_DOWNLOAD", "1")
    assert dl.downloads_allowed() and not dl.downloads_allowed(False)


def test_limit_and_seed(data_dir):
    a = load_dataset("copa", root=data_dir, limit=10, seed=1)
    b = load_dataset("copa", root=data_dir, limit=10, seed=1)
    c = load_dataset("copa", root=data_dir, limit=10, seed=2)
    assert a == b and a != c and len(a) == 10
    assert [x.idx for x in a] == sorted(x.idx for x in a)  # original order kept
    assert subsample([1, 2, 3], None) == [1, 2, 3] and subsample([1, 2, 3], 10) == [1, 2, 3]
    with pytest.raises(ValueError):
        subsample([1, 2, 3], -1)


def test_malformed_rows_are_counted_and_a_bad_file_refused(tmp_path):
    good = '{"premise": "p.", "choice1": "a", "choice2": "b", "question": "cause", "label": 0, "idx": %d}'
    rows = [good % i for i in range(8)] + ['{"premise": "p."}', "not json"]
    root = tmp_path / "data"
    (root / "mc/copa").mkdir(parents=True)
    (root / "mc/copa/val.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.warns(MalformedRowsWarning, match="skipped 2 malformed row"):
        items = load_dataset("copa", root=root)
    assert len(items) == 8
    # more than half malformed: refused
    (root / "mc/copa/val.jsonl").write_text("\n".join([good % 0, "{}", "[]", '{"label": 3}']) + "\n")
    with pytest.raises(MalformedDataError, match="3 of 4 rows are malformed"):
        load_dataset("copa", root=root)
    # exactly half is still accepted (with a warning)
    with pytest.warns(MalformedRowsWarning):
        assert parse_rows("x", enumerate(["1", "a"]), int) == [1]
    with pytest.raises(MalformedDataError, match="no data rows"):
        parse_rows("x", [], int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_rows("x", enumerate(["1", "2"]), int) == [1, 2]


def test_malformed_whole_file_is_refused(tmp_path):
    root = tmp_path / "data"
    (root / "truthfulqa").mkdir(parents=True)
    (root / "truthfulqa/mc_task.json").write_text("{not json")
    with pytest.raises(MalformedDataError, match="not valid JSON"):
        load_dataset("truthfulqa_mc", root=root)
    (root / "truthfulqa/TruthfulQA.csv").write_text("a,b\n1,2\n")
    with pytest.raises(MalformedDataError, match="missing column"):
        load_dataset("truthfulqa", root=root)


def test_sts_goes_through_the_sts_loaders(data_dir):
    pairs = load_dataset("sts13", root=data_dir)
    assert len(pairs) == 1500
    assert len(load_dataset("stsb", "dev", root=data_dir)) == 1500
    assert len(load_dataset("sick", root=data_dir)) == 4927
    assert Path(get_spec("sts12").files()[0]).parts[:2] == ("sts", "STS12-en-test")
