"""`--ray`: eval and embed sharded over a local Ray cluster (2 workers, started here) give exactly the results of
the single-process run; a bad address or a missing Ray is one line."""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pytest
import torch

from cli_support import error_line, run
from steerlab.distributed import ModelSpec, RayCluster, check_address
from steerlab.embed.commands import embed_command
from steerlab.embed.io import ChunkStore
from steerlab.evals.commands import run_eval
from steerlab.evals.runner import Search, run_fold_job, run_task
from steerlab.methods import make_method
from steerlab.testing import tiny_model

# Ray Data reads its own deprecated settings when it copies its context to the actors
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

SENTENCES = [f"sentence {i}: " + " ".join(["a cat sat on the mat", "dogs run", "hello"][i % 3]
                                         for _ in range(i % 5 + 1)) for i in range(37)]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 CPUs, shut down after the module; this process runs torch on 1 thread meanwhile,
    so the reference runs and the 2 actors (which take this process's thread count) use 1 thread each."""
    ray = pytest.importorskip("ray")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


def test_bad_address_is_one_line(tmp_path) -> None:
    pytest.importorskip("ray")
    with pytest.raises(RuntimeError, match=r"cannot reach a Ray cluster at 127\.0\.0\.1:1 \(.+\): start one there"):
        with RayCluster("127.0.0.1:1"):
            pass
    with pytest.raises(ValueError, match="bad Ray address 'nonsense': use HOST:PORT"):
        check_address("nonsense")
    src = tmp_path / "s.txt"
    src.write_text("hello\n")
    assert "cannot reach a Ray cluster at 127.0.0.1:1" in error_line(run("embed", src, "--ray", "127.0.0.1:1"))
    assert "bad Ray address 'x:y'" in error_line(run("eval", "copa", "--model", "tiny", "--ray", "x:y",
                                                     "--out", tmp_path / "ev"))
    assert "drop --ray" in error_line(run("eval", "sts", "--ray", "local"))


def test_without_ray_is_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails
    with pytest.raises(RuntimeError, match=r"--ray needs Ray with Ray Data: pip install 'ray\[data\]=="):
        with RayCluster("local"):
            pass


def test_model_spec_paths(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    assert ModelSpec("m").model == str(tmp_path / "m")  # actors do not start in this folder
    assert ModelSpec("embedded").model == "embedded" and ModelSpec("tiny:gpt2").model == "tiny:gpt2"
    with pytest.raises(ValueError, match="workers"):
        RayCluster("local", workers=0)


class Stop(Exception):
    pass


def test_shard_contract_without_ray(tmp_path, data_dir) -> None:
    """What `--ray` relies on, in one process: jobs run by `run_fold_job` on another copy of the model, from a
    pickled `FoldWork`, finishing in any order, give the plain run's results, with a validation search and when
    they resume a plain run that was interrupted (and the other way round)."""
    lm, other = tiny_model("llama"), tiny_model("llama")
    sent: list = []

    def shard(work, jobs):  # last job first, each from a pickled copy of the shared work
        sent.extend(jobs)
        for job in reversed(jobs):
            yield job, run_fold_job(other, pickle.loads(pickle.dumps(work)), job)

    def task(out, **kw):
        kw = {"limit": 16, "folds": 2, "root": data_dir, "chunk_size": 3,
              "search": Search({"multiplier": (-6.0, 3.0)}, grow=False), **kw}
        return run_task(lm, "caa/refusal", make_method("caa", layer=1), tmp_path / out, **kw)

    ref = task("ref")
    _same_results(ref, task("sharded", shard=shard))
    assert len(sent) == 2 and all(len(job.chunks) == 3 for job in sent)  # a fold per job: fit once
    assert [pf["selection"] for pf in ref["per_fold"]] == [pf["selection"] for pf in task("sharded")["per_fold"]]

    def stop_after(n):
        seen: list[int] = []

        def hook(fold, idx):
            seen.extend(idx)
            if len(seen) >= n:
                raise Stop

        return hook

    for first, then in (({}, {"shard": shard}), ({"shard": shard}, {})):
        out = f"cut{len(first)}"
        with pytest.raises(Stop):
            task(out, on_chunk=stop_after(3), **first)
        _same_results(ref, task(out, **then))
    # a method that fits nothing: a job per chunk
    sent.clear()
    ref = run_task(lm, "copa", make_method("none"), tmp_path / "n_ref", limit=8, folds=2, chunk_size=2)
    got = run_task(lm, "copa", make_method("none"), tmp_path / "n_got", limit=8, folds=2, chunk_size=2, shard=shard)
    _same_results(ref, got)
    assert len(sent) == 4 and all(len(job.chunks) == 1 for job in sent)


def test_chunk_store_fill_from(tmp_path) -> None:
    texts = [f"s{i}" for i in range(10)]
    store = ChunkStore(tmp_path / "parts", texts, 2, {"m": 1}, chunk_size=4)
    store.write(1, np.ones((4, 2), np.float32))  # an earlier run finished chunk 1
    asked: list = []

    def encode_chunks(work):
        asked.extend(work)
        for i, chunk in reversed(work):
            yield i, np.array([[float(t[1:]), 0.0] for t in chunk], np.float32)

    store.fill_from(texts, encode_chunks)
    assert [i for i, _ in asked] == [0, 2] and asked[1][1] == ["s8", "s9"]
    assert store.load()[:, 0].tolist() == [0, 1, 2, 3, 1, 1, 1, 1, 8, 9]
    short = ChunkStore(tmp_path / "p2", texts, 2, {"m": 1}, chunk_size=4)
    with pytest.raises(RuntimeError, match="2 chunk\\(s\\) did not come back"):
        short.fill_from(texts, lambda work: iter([(0, np.zeros((4, 2), np.float32))]))


def test_embed_on_ray_is_identical(cluster, tmp_path) -> None:
    lm = tiny_model("llama")
    src = tmp_path / "s.txt"
    src.write_text("\n".join(SENTENCES) + "\n")
    options = {"layer": 3, "tp": True}
    ref = embed_command(src, tmp_path / "ref.npy", lm, batch_size=3, chunk_size=8, progress=False, **options)
    # the command line: chunks of 8 over 2 actors, each loading the model from its folder
    model_dir = tmp_path / "tiny"
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    res = run("embed", src, "--out", tmp_path / "ray.npy", "--model", model_dir, "--layer", "3", "--tp",
              "--batch-size", "3", "--chunk-size", "8", "--ray", "local", "--ray-workers", "2")
    assert res.exit_code == 0, res.output
    a, b = np.load(ref), np.load(tmp_path / "ray.npy")
    assert a.shape == (37, 64) and np.array_equal(a, b)  # bit for bit
    assert not (tmp_path / "ray.npy.parts").exists()


def _same_results(a: dict, b: dict) -> None:
    assert a["items"] == b["items"]  # every item's scores, fold and group, exactly
    assert a["metrics"] == b["metrics"] and a["per_fold"] == b["per_fold"]
    assert a["config_hash"] == b["config_hash"]


def test_eval_on_ray_is_identical(cluster, tmp_path) -> None:
    kw = dict(limit=8, folds=2, seed=0, chunk_size=2, progress=False)
    # CAA: each fold (its fit and its 2 chunks) is one job
    caa = {"layer": 2, "multiplier": 50.0}
    ref = run_eval("copa", "caa", "tiny", out=tmp_path / "ref", method_options=caa, **kw)
    with RayCluster("local", workers=2) as c:
        done: list[int] = []
        got = run_eval("copa", "caa", "tiny", out=tmp_path / "ray", method_options=caa,
                       shard=c.eval_shard(ModelSpec("tiny")), on_chunk=lambda f, idx: done.extend(idx), **kw)
    _same_results(ref, got)
    assert sorted(done) == list(range(8)) and [pf["fit"] for pf in got["per_fold"]] == [pf["fit"] for pf in
                                                                                        ref["per_fold"]]
    assert all(pf["fit"] for pf in got["per_fold"])
    # the baseline fits nothing: each chunk is a job (the command line, with the same ids as without --ray)
    ref = run_eval("copa", "none", "tiny", out=tmp_path / "ref_none", limit=8, folds=2, seed=0, batch_size=16,
                   progress=False)
    res = run("eval", "copa", "--model", "tiny", "--limit", "8", "--folds", "2", "--out", tmp_path / "ray_none",
              "--ray", "local")
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "ray_none" / "results.json").read_text())
    _same_results(ref, got)
