"""The eval runner: tasks x methods x folds, per-item checkpoints, resume after interruption, run_eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from steerlab.evals.commands import eval_command, parse_method_options, run_eval
from steerlab.evals.runner import Checkpoint, config_hash, get_task, run_task
from steerlab.methods import make_method


class Stop(Exception):
    pass


def _counter(stop_after: int | None = None):
    seen: list[int] = []

    def hook(fold: int, idx: list[int]) -> None:
        seen.extend(idx)
        if stop_after is not None and len(seen) >= stop_after:
            raise Stop

    return seen, hook


def _run(lm, out, method="caa", hook=None, **kw):
    kw = {"limit": 8, "folds": 2, "seed": 0, "chunk_size": 2, **kw}
    opts = {"layer": 2, "multiplier": 50.0} if method == "caa" else {}
    return run_task(lm, "copa", make_method(method, **opts), out, on_chunk=hook, **kw)


def _ckpt(out: Path) -> Path:
    (p,) = (out / "checkpoint").glob("*.jsonl")
    return p


def test_tasks():
    assert get_task("truthfulqa_mc").metrics == ("mc1", "mc2", "mc3")
    assert get_task("winogrande").metrics == ("acc", "acc_norm", "acc_char")
    assert get_task("caa/sycophancy").metrics == ("p_matching", "matching_rate")
    with pytest.raises(ValueError, match="unknown task"):
        get_task("boolq")
    with pytest.raises(ValueError, match="unknown behaviour set"):
        get_task("persona/a/b")
    assert get_task("truthfulqa_gen").metrics == ("true", "info", "true_info", "coherence", "repetition", "degenerate",
                                                  "empty")


def test_run_folds_and_identical_rerun(tiny, tmp_path):
    seen, hook = _counter()
    res = _run(tiny, tmp_path / "a", hook=hook)
    assert res["metrics"]["n"] == 8 and sorted(seen) == list(range(8))
    assert [r["index"] for r in res["items"]] == list(range(8))
    assert sum(f["n"] for f in res["per_fold"]) == 8 and all(f["fit"]["layer"] == 2 for f in res["per_fold"])
    folds = {f: {r["group"] for r in res["items"] if r["fold"] == f} for f in (0, 1)}
    assert not folds[0] & folds[1]
    acc = sum(r["acc"] for r in res["items"]) / 8
    assert res["metrics"]["acc"] == pytest.approx(acc)
    first = (tmp_path / "a" / "results.json").read_bytes()
    # the same config again: nothing recomputed, byte-identical results
    seen2, hook2 = _counter()
    _run(tiny, tmp_path / "a", hook=hook2)
    assert seen2 == [] and (tmp_path / "a" / "results.json").read_bytes() == first
    # from scratch in another folder: identical results
    _run(tiny, tmp_path / "b")
    assert (tmp_path / "b" / "results.json").read_bytes() == first
    # another config gets another checkpoint file and is computed
    seen3, hook3 = _counter()
    _run(tiny, tmp_path / "a", "none", hook=hook3)
    assert len(seen3) == 8 and len(list((tmp_path / "a" / "checkpoint").glob("*.jsonl"))) == 2


def test_interrupted_run_resumes_without_recomputing(tiny, tmp_path):
    full = _run(tiny, tmp_path / "full")
    seen, hook = _counter(stop_after=4)
    with pytest.raises(Stop):
        _run(tiny, tmp_path / "cut", hook=hook)
    assert not (tmp_path / "cut" / "results.json").exists()
    done = [json.loads(x) for x in _ckpt(tmp_path / "cut").read_text().splitlines()]
    assert sorted(r["index"] for r in done if r["kind"] == "item") == sorted(seen)
    seen2, hook2 = _counter()
    res = _run(tiny, tmp_path / "cut", hook=hook2)
    assert len(seen2) == 4 and not set(seen2) & set(seen)  # finished items are not scored again
    assert res == full
    assert (tmp_path / "cut" / "results.json").read_bytes() == (tmp_path / "full" / "results.json").read_bytes()


def test_torn_checkpoint_line_is_dropped(tiny, tmp_path):
    full = _run(tiny, tmp_path / "full", "none")
    seen, hook = _counter(stop_after=2)
    with pytest.raises(Stop):
        _run(tiny, tmp_path / "t", "none", hook=hook)
    p = _ckpt(tmp_path / "t")
    with open(p, "ab") as f:  # a kill in the middle of a write
        f.write(b'{"kind": "item", "fold": 0, "ind')
    seen2, hook2 = _counter()
    res = _run(tiny, tmp_path / "t", "none", hook=hook2)
    assert len(seen2) == 6 and res == full
    assert all(json.loads(x) for x in p.read_text().splitlines())


def test_killed_subprocess_resumes(tiny, tmp_path):
    """A real SIGKILL in the middle of a run; the resumed run finishes only the missing items."""
    out = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, signal
        from steerlab.evals.commands import run_eval
        n = []
        def hook(fold, idx):
            n.extend(idx)
            if len(n) >= 4:
                os.kill(os.getpid(), signal.SIGKILL)
        run_eval("copa", "none", "tiny", limit=8, folds=2, out={str(out)!r}, seed=0, chunk_size=2,
                 progress=False, on_chunk=hook)
    """)
    env = {**os.environ, "STEERLAB_DATA": os.environ.get("STEERLAB_DATA", str(Path(__file__).resolve().parents[2]
                                                                              / "shared" / "data"))}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not (out / "results.json").exists()
    seen, hook = _counter()
    res = run_eval("copa", "none", "tiny", limit=8, folds=2, out=out, seed=0, chunk_size=2, progress=False,
                   on_chunk=hook)
    assert len(seen) == 4 and res["metrics"]["n"] == 8
    ref = run_eval("copa", "none", "tiny", limit=8, folds=2, out=tmp_path / "ref", seed=0, chunk_size=2,
                   progress=False, report=False)
    assert res["items"] == ref["items"] and res["metrics"] == ref["metrics"]
    assert {p.name for p in out.iterdir()} >= {"results.json", "results.md", "results.png", "checkpoint"}


def test_truthfulqa_gen_with_stub_judge(tiny, tmp_path):
    from steerlab.evals.judges import JudgeResult

    class Stub:
        def __init__(self, name: str, truth: int) -> None:
            self.name, self.truth = name, truth

        def judge_many(self, questions, answers, items=None):
            return [JudgeResult(len(q) % 2 == self.truth, True) for q in questions]

    stub = Stub("stub", 0)
    base = run_task(tiny, "truthfulqa_gen", make_method("none"), tmp_path / "n", limit=2, folds=2, judge=stub)
    caa = run_task(tiny, "truthfulqa_gen", make_method("caa", layer=1, multiplier=30.0), tmp_path / "c",
                   limit=2, folds=2, judge=stub)
    # the judge is part of the configuration: another judge in the same folder never resumes this run
    other = run_task(tiny, "truthfulqa_gen", make_method("none"), tmp_path / "n", limit=2, folds=2,
                     judge=Stub("stub-inverted", 1))
    assert base["config_hash"] != other["config_hash"]
    assert base["judge"].startswith("stub; empty = ") and other["judge"].startswith("stub-inverted; empty = ")
    assert len(list((tmp_path / "n" / "checkpoint").glob("*.jsonl"))) == 2
    assert [it["truthful"] for it in other["items"]] == [not it["truthful"] for it in base["items"]]
    with pytest.raises(ValueError, match="task 'copa' is not scored by a judge: drop judge="):
        run_task(tiny, "copa", make_method("none"), tmp_path / "x", limit=2, folds=1, judge=stub)
    for r in (base, caa):
        m = r["metrics"]
        assert m["n"] == 2 and m["true_info"] == pytest.approx(m["true"] * m["info"])
        # the stub calls everything informative: only degenerate answers are not
        assert m["info"] == pytest.approx(1 - m["degenerate"])
        assert all(it["judge"] == r["judge"] and isinstance(it["answer"], str) for it in r["items"])
        assert m["coherence"] == pytest.approx(sum(it["loglik"] for it in r["items"]) / 2)
        assert all(it["informative"] == (not it["degenerate"]) for it in r["items"])
    assert [it["answer"] for it in base["items"]] != [it["answer"] for it in caa["items"]]
    from steerlab.evals.runner import _aggregate_gen

    agg = _aggregate_gen([{"truthful": True, "informative": None}, {"truthful": False, "informative": True}])
    assert agg == {"true": 0.5, "info": 1.0, "true_info": 0.5, "coherence": None, "repetition": None,
                   "degenerate": None, "empty": None}


def test_folds_one_only_for_baseline(tiny, tmp_path):
    res = _run(tiny, tmp_path, "none", folds=1, limit=3)
    assert res["metrics"]["n"] == 3 and len(res["per_fold"]) == 1
    with pytest.raises(ValueError, match="folds >= 2"):
        _run(tiny, tmp_path, "caa", folds=1)


def test_run_eval_bad_input(tmp_path):
    for kwargs, msg in [
        ({"task": "nope"}, "unknown task"),
        ({"method": "nope"}, "unknown method"),
        ({"limit": 0}, "--limit must be a positive integer"),
        ({"limit": -3}, "--limit must be a positive integer"),
        ({"limit": 1}, "smaller than --folds"),
        ({"folds": 0}, "--folds must be"),
        ({"method": "caa", "folds": 1}, "use --folds 2"),
        ({"method": "caa", "bogus": 1}, "unknown option"),
    ]:
        args = {"task": "copa", "method": "none", "model": "tiny", "limit": 4, "folds": 2, "out": tmp_path, **kwargs}
        with pytest.raises(ValueError, match=msg) as e:
            run_eval(**args)
        assert "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())  # nothing written for bad input


def test_options_and_command():
    assert parse_method_options(["layer=3", "multiplier = -2", "steer-from=answer"]) == {
        "layer": "3", "multiplier": "-2", "steer_from": "answer"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_method_options(["layer"])
    cmd = eval_command("caa/sycophancy", "caa", "embedded", 10, 2, "out dir", 0, {"layer": 3})
    assert cmd == "steerlab eval caa/sycophancy --method caa --model embedded --limit 10 --folds 2 --seed 0 " \
                  "--out 'out dir' --param layer=3"
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1}) != config_hash({"a": 1, "b": 3})


def test_checkpoint_appends_lines(tmp_path):
    ck = Checkpoint(tmp_path / "c.jsonl", {"x": 1})
    ck.append({"kind": "item", "fold": 0, "index": 3, "acc": 1.0})
    ck.sync()
    ck.close()
    again = Checkpoint(tmp_path / "c.jsonl", {"x": 1})
    again.close()
    assert list(again.items) == [3]
    assert (tmp_path / "c.jsonl").read_text().count('"kind": "config"') == 1


@pytest.mark.slow
def test_smoke_truthfulqa_embedded(embedded, tmp_path):
    """TruthfulQA MC, 6 questions, 2 folds, none and CAA on the embedded model."""
    base = run_eval("truthfulqa_mc", "none", embedded, limit=6, folds=2, out=tmp_path / "none", progress=False)
    caa = run_eval("truthfulqa_mc", "caa", embedded, limit=6, folds=2, out=tmp_path / "caa", progress=False,
                   multiplier=4.0, max_pairs=6)
    for r in (base, caa):
        assert r["metrics"]["n"] == 6
        assert all(0.0 <= r["metrics"][k] <= 1.0 for k in ("mc1", "mc2", "mc3"))
    assert [f["fit"]["layer"] for f in caa["per_fold"]] == [embedded.adapter.n_layers // 2] * 2
    assert caa["metrics"]["mc2"] != base["metrics"]["mc2"]
    assert (tmp_path / "caa" / "results.png").stat().st_size > 1000


def test_truthfulqa_mc_protocols(tiny, tmp_path, data_dir):
    """`truthfulqa_mc` scores with ITI's instruction before the primer (the ITI/FASB protocol), `truthfulqa_mc_lmeval`
    without it; each equals evaluate_truthfulqa_mc with that prompt, and the protocol is part of the run's hash."""
    from steerlab.data.registry import load_dataset
    from steerlab.evals.truthfulqa import evaluate_truthfulqa_mc

    items = load_dataset("truthfulqa_mc", root=data_dir, limit=3, seed=0)
    runs = {}
    for task, instruction in (("truthfulqa_mc", True), ("truthfulqa_mc_lmeval", False)):
        res = run_task(tiny, task, make_method("none"), tmp_path, limit=3, folds=1, seed=0, root=data_dir)
        ref = evaluate_truthfulqa_mc(tiny, items, instruction=instruction)
        assert [(it["mc1"], it["mc2"]) for it in res["items"]] == [(r.mc1, r.mc2) for r in ref.per_question]
        assert res["protocol"] == {"instruction": instruction}
        runs[task] = res
    assert runs["truthfulqa_mc"]["config_hash"] != runs["truthfulqa_mc_lmeval"]["config_hash"]
    assert [it["mc2"] for it in runs["truthfulqa_mc"]["items"]] != [it["mc2"] for it in runs["truthfulqa_mc_lmeval"]["items"]]


def test_search_chooses_on_validation_questions_like_a_plain_loop(tiny, tmp_path, data_dir):
    """Inside each fold a CAA multiplier grid is scored on the fold's validation questions (ITI's 80/20 split of
    its training questions); the candidates' metrics equal a plain loop (fit on the fit part at that multiplier,
    evaluate_behavior on the validation part), the choice is their best, the held-out rows equal a run with the
    chosen multiplier, and a second run resumes everything."""
    from steerlab.data.registry import load_dataset
    from steerlab.evals.persona import evaluate_behavior
    from steerlab.evals.runner import Search
    from steerlab.evals.truthfulqa import kfold_by_question, train_val_split

    task, grid_ = "caa/refusal", (-6.0, 3.0)
    search = Search({"multiplier": grid_}, grow=False)
    res = run_task(tiny, task, make_method("caa", layer=1), tmp_path / "s", limit=16, folds=2, root=data_dir,
                   search=search)
    assert res["search"]["rule"]["text"] == "max p_matching" and res["search"]["axes"] == {"multiplier": list(grid_)}
    items = load_dataset(task, root=data_dir, limit=16, seed=0)
    folds = kfold_by_question([it.question.strip() for it in items], 2, 0)
    for pf, fold in zip(res["per_fold"], folds):
        sel = pf["selection"]
        fit_idx, val_idx = train_val_split(fold.train, 0.2, 42)
        fit_items, val_items = [items[i] for i in fit_idx], [items[i] for i in val_idx]
        plain = {}
        for m in grid_:
            fm = make_method("caa", layer=1, multiplier=m).fit(tiny, fit_items, val_items)
            probs = evaluate_behavior(tiny, val_items, name=task, **fm.eval_kwargs()).probs
            plain[m] = sum(probs) / len(probs)
        got = {c["config"]["multiplier"]: c["metrics"]["p_matching"] for c in sel["candidates"]}
        assert got == pytest.approx(plain, abs=1e-6) and sel["n_val"] == len(val_idx)
        best = max(grid_, key=lambda m: plain[m])
        assert sel["chosen"] == {"multiplier": best} and pf["fit"]["chosen"] == {"multiplier": best}
        direct = run_task(tiny, task, make_method("caa", layer=1, multiplier=best), tmp_path / f"d{fold.index}",
                          limit=16, folds=2, root=data_dir)
        rows = {it["index"]: it["p_matching"] for it in direct["items"] if it["fold"] == fold.index}
        assert {it["index"]: it["p_matching"] for it in res["items"] if it["fold"] == fold.index} == rows
    seen, hook = _counter()
    again = run_task(tiny, task, make_method("caa", layer=1), tmp_path / "s", limit=16, folds=2, root=data_dir,
                     search=search, on_chunk=hook)
    assert seen == [] and again["items"] == res["items"] and again["per_fold"] == res["per_fold"]
    with pytest.raises(ValueError, match="^method 'none' has no options to search: drop the grid$"):
        run_task(tiny, task, make_method("none"), tmp_path / "x", limit=16, folds=2, root=data_dir, search=search)
    with pytest.raises(ValueError, match="^unknown option\\(s\\) for method 'caa': strength"):
        run_task(tiny, task, make_method("caa"), tmp_path / "x", limit=16, folds=2, root=data_dir,
                 search=Search({"strength": (1.0,)}))


def test_generation_search_applies_the_coherence_floor(tiny, tmp_path, data_dir):
    """truthfulqa_gen: the unsteered reference is generated on the same validation questions, a candidate is
    eligible when its coherence is at least the reference's minus 0.5 nats/token, and the choice is the best
    True*Info among the eligible ones (selection.choose over the recorded metrics)."""
    from steerlab.data.registry import load_dataset
    from steerlab.evals.judges import JudgeResult
    from steerlab.evals.runner import Search
    from steerlab.evals.selection import Candidate, Rule, choose
    from steerlab.evals.truthfulqa import kfold_by_question, train_val_split
    from steerlab.evals.truthfulqa_gen import evaluate_truthfulqa_gen

    class Stub:
        name = "stub"

        def judge_many(self, questions, answers, items=None):
            return [JudgeResult(len(a) % 2 == 0, True) for a in answers]

    assert get_task("truthfulqa_gen").select.describe() == "max true_info (ties: true) with coherence >= unsteered - 0.5"
    # a tiny random model's coherence barely moves: a small margin makes the floor bite
    rule = Rule("true_info", ("true",), "coherence", 0.01)
    res = run_task(tiny, "truthfulqa_gen", make_method("caa", layer=1), tmp_path / "g", limit=12, folds=2,
                   root=data_dir, judge=Stub(), search=Search({"multiplier": (0.5, 40.0)}, rule=rule, grow=False))
    items = load_dataset("truthfulqa", root=data_dir, limit=12, seed=0)
    fold = kfold_by_question([it.question.strip() for it in items], 2, 0)[0]
    _, val_idx = train_val_split(fold.train, 0.2, 42)
    sel = res["per_fold"][0]["selection"]
    plain = evaluate_truthfulqa_gen(tiny, [items[i] for i in val_idx], judge=Stub(), progress=False)
    assert sel["reference"]["coherence"] == pytest.approx(plain.coherence, abs=1e-6)
    assert sel["rule"]["text"] == "max true_info (ties: true) with coherence >= unsteered - 0.01"
    floor = sel["reference"]["coherence"] - 0.01
    assert [c["eligible"] for c in sel["candidates"]] == [c["metrics"]["coherence"] >= floor for c in sel["candidates"]]
    assert [c["eligible"] for c in sel["candidates"]] == [True, False]  # x40 loses coherence here
    again = choose([Candidate(c["config"], c["metrics"]) for c in sel["candidates"]], rule, sel["reference"])
    assert sel["chosen"] == again.config == {"multiplier": 0.5} and not sel["fallback"]


def test_inference_options_fit_once_per_fold(tiny, tmp_path, data_dir, monkeypatch):
    """FASB's threshold / alpha are applied to one fit: a 2 x 2 grid fits each fold once."""
    from steerlab.evals.runner import Search
    from steerlab.methods.fasb import FASB

    calls = []
    real = FASB.fit_model

    def counting(self, lm, train_items, val_items):
        calls.append(len(train_items))
        return real(self, lm, train_items, val_items)

    monkeypatch.setattr(FASB, "fit_model", counting)
    search = Search({"threshold": (0.5, 0.6), "alpha": (5.0, 10.0)}, grow=False)
    res = run_task(tiny, "truthfulqa_mc", make_method("fasb", k=4, s=2), tmp_path / "f", limit=12, folds=2,
                   root=data_dir, search=search)
    assert len(calls) == 2  # one fit per fold for 4 configurations (+ the chosen one, reused)
    assert {pf["selection"]["chosen"]["threshold"] for pf in res["per_fold"]} <= {0.5, 0.6}
    assert all(len(pf["selection"]["candidates"]) == 4 for pf in res["per_fold"])
