"""One artifact format for every intervention (issue #10 section 4): round trips and the shared refusals."""

from __future__ import annotations

import json
import struct
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from steerlab.artifacts import (InterventionArtifact, ModelIdentity, TensorSpec, VectorError, artifact_vector,
                                load_intervention, load_vector, save_intervention, vector_artifact)
from steerlab.interventions.iti import ITIConfig, ITIExample, fit_iti, iti_artifact, load_iti, save_iti
from steerlab.interventions.trainable import TrainableAdd
from steerlab.models import LoadedModel
from steerlab.testing import tiny_model
from steerlab.vectors import SteeringVector, VectorMeta

KINDS = ["vector", "iti", "trainable_add", "gate"]


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _vector(lm: LoadedModel) -> InterventionArtifact:
    a = lm.adapter
    meta = VectorMeta(model_name=lm.name, architecture=a.family, hidden_size=a.hidden_size, n_layers=a.n_layers,
                      heads_width=a.heads_width, method="mean_diff", positions="last", extra={"n_pairs": 4})
    vec = SteeringVector({"residual.1": _rand(a.hidden_size), "residual.3": _rand(a.hidden_size, seed=1)}, meta)
    return vector_artifact(vec)


def _iti_fit(lm: LoadedModel, val_fraction: float = 0.34):
    a = lm.adapter
    records = [ITIExample(f"q{i // 2}", f" answer {i}", i % 2) for i in range(12)]
    x = _rand(12, a.n_layers, a.n_heads, a.head_dim, seed=3)
    x[1::2] += 0.5  # label-1 rows shifted: probes learn something
    cfg = ITIConfig(k=a.n_layers * a.n_heads, alpha=3.0, val_fraction=val_fraction, seed=1)
    return fit_iti(lm, records, cfg, activations=x)


def _iti(lm: LoadedModel) -> InterventionArtifact:
    return iti_artifact(_iti_fit(lm), data={"records": 12, "source": "synthetic"})


def _trainable(lm: LoadedModel) -> InterventionArtifact:
    a = lm.adapter
    module = TrainableAdd(lm, ["residual.3", "heads.1"], where="generated",
                          init={"residual.3": _rand(a.hidden_size, seed=4), "heads.1": _rand(a.heads_width, seed=5)})
    return module.to_artifact(params={"lr": 0.05, "steps": 20}, data={"examples": [["hi", " there"]]},
                              extra={"losses": [3.0, 2.5]})


def _gate(lm: LoadedModel) -> InterventionArtifact:
    """A gated shift (no such method ships yet: the format holds its parameters all the same)."""
    a = lm.adapter
    tensors = {"gate/residual.3": _rand(a.hidden_size, seed=6), "gate/bias": torch.tensor([0.25]),
               "residual.3": _rand(a.hidden_size, seed=7)}
    specs = {"gate/residual.3": TensorSpec("gate_weight", site="residual.3"),
             "gate/bias": TensorSpec("gate_bias", dims=("*",)),
             "residual.3": TensorSpec("vector", site="residual.3")}
    return InterventionArtifact("gate", tensors, specs, ModelIdentity.of(lm), method="sigmoid_gate",
                                params={"threshold": 0.5}, data={"pairs": "joy.jsonl", "n": 32})


BUILD: dict[str, Callable[[LoadedModel], InterventionArtifact]] = {
    "vector": _vector, "iti": _iti, "trainable_add": _trainable, "gate": _gate}


def _same(a: InterventionArtifact, b: InterventionArtifact) -> None:
    assert (a.kind, a.method, a.positions, a.model, a.params, a.data, a.extra) == \
        (b.kind, b.method, b.positions, b.model, b.params, b.data, b.extra)
    assert a.specs == b.specs and a.tensors.keys() == b.tensors.keys()
    for k in a.tensors:
        assert a.tensors[k].dtype == b.tensors[k].dtype and torch.equal(a.tensors[k], b.tensors[k]), k


def _tamper(path: Path, out: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """Copy ``path`` to ``out`` with its tensors edited and its metadata unchanged (what a corrupt or
    hand-edited file looks like; save_intervention itself refuses such tensors)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(out), metadata=meta)
    return out


def _site_tensor(art: InterventionArtifact) -> str:
    return sorted(k for k, s in art.specs.items() if s.site is not None)[0]


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(kind, tiny, tmp_path) -> None:
    art = BUILD[kind](tiny)
    path = save_intervention(art, tmp_path / kind)
    assert path.name == f"{kind}.safetensors" and sorted(p.name for p in tmp_path.iterdir()) == \
        [f"{kind}.json", f"{kind}.safetensors"]
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])  # plain JSON header, no pickle
    assert header["__metadata__"]["format"] == "steerlab.intervention/1"
    meta = json.loads(header["__metadata__"]["steerlab"])
    assert meta["kind"] == kind and meta["model"]["name"] == "tiny-llama" and sorted(meta["tensors"]) == sorted(art.tensors)
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["meta"] == meta and sorted(side["tensors"]) == sorted(art.tensors)
    back = load_intervention(path, tiny)
    _same(art, back)
    assert load_intervention(path, kind=kind).kind == kind
    other = "iti" if kind != "iti" else "vector"
    with pytest.raises(VectorError, match=rf"holds a {kind} artifact, not a {other} artifact$"):
        load_intervention(path, kind=other)
    # every kind here holds a steering vector; load_vector reads it (so generate --vector takes any of them)
    vec = load_vector(path, tiny)
    assert vec.meta.model_name == "tiny-llama" and vec.vectors.keys() == artifact_vector(art).vectors.keys()


def _meta_text(meta: VectorMeta) -> str:
    return json.dumps(meta.to_json(), sort_keys=True)


def test_iti_fit_round_trip(tiny, tmp_path) -> None:
    """An ITIFit saved whole: vector, probes (weights, biases, accuracies, convergence, settings), directions,
    sigma, selected heads, split and config all equal after the round trip, and its vector loads alone."""
    for val_fraction in (0.34, 0.0):  # without validation rows val_acc is NaN: allowed for that tensor only
        fit = _iti_fit(tiny, val_fraction)
        path = save_iti(fit, tmp_path / f"iti{int(val_fraction * 100)}", data={"file": "qa.jsonl"})
        back = load_iti(path, tiny)
        assert back.config == fit.config and back.heads == fit.heads and len(back.heads) == 16
        assert _meta_text(back.vector.meta) == _meta_text(fit.vector.meta)  # NaN-aware (val_acc without val rows)
        assert back.vector.vectors.keys() == fit.vector.vectors.keys()
        assert all(torch.equal(back.vector.vectors[k], fit.vector.vectors[k]) for k in fit.vector.vectors)
        for name in ("directions", "sigma", "train_idx", "val_idx"):
            assert torch.equal(getattr(back, name), getattr(fit, name)), name
        p, q = fit.probes, back.probes
        assert (q.c, q.standardize, q.n_iter) == (p.c, p.standardize, p.n_iter)
        for name in ("weights", "biases", "train_acc", "converged"):
            assert torch.equal(getattr(q, name), getattr(p, name)), name
        assert torch.equal(q.val_acc.nan_to_num(-1.0), p.val_acc.nan_to_num(-1.0))
        assert bool(torch.isnan(q.val_acc).all()) == (val_fraction == 0.0)
        assert load_intervention(path).data == {"file": "qa.jsonl"}
        assert load_intervention(path).params == {**asdict(fit.config), "probes": {"c": 1.0, "standardize": False,
                                                                                    "n_iter": p.n_iter}}
        assert _meta_text(load_vector(path, tiny).meta) == _meta_text(fit.vector.meta)
    with pytest.raises(VectorError, match="holds a vector artifact, not a iti artifact"):
        load_iti(save_intervention(_vector(tiny), tmp_path / "v"))


# --- the same refusals for every kind ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_refuses_another_model(kind, tiny, tmp_path) -> None:
    what = "vector" if kind == "vector" else f"{kind} artifact"
    path = save_intervention(BUILD[kind](tiny_model("gpt_neox")), tmp_path / "neox")
    with pytest.raises(VectorError, match=rf"^{what} was made for another model: a gpt_neox model "
                                          r"\('tiny-gpt_neox'\), not this llama model \('tiny-llama'\)$"):
        load_intervention(path, tiny)
    deep = tiny_model("llama", n_layers=6)
    deep.name = "tiny-llama-6"
    path = save_intervention(BUILD[kind](deep), tmp_path / "deep")
    with pytest.raises(VectorError, match=rf"^{what} was made for another model: 'tiny-llama-6' \(6 layers\), "
                                          r"not 'tiny-llama' \(4 layers\)$"):
        load_intervention(path, tiny)


@pytest.mark.parametrize("kind", KINDS)
def test_refuses_wrong_width(kind, tiny, tmp_path) -> None:
    what = "vector" if kind == "vector" else f"{kind} artifact"
    wide = save_intervention(BUILD[kind](tiny_model("llama", hidden=128)), tmp_path / "wide")
    with pytest.raises(VectorError, match=rf"^{what} was made for another model \('tiny-llama'\): its hidden size "
                                          r"128 does not match the model's 64 \('tiny-llama'\)$"):
        load_intervention(wide, tiny)
    art = BUILD[kind](tiny)
    name = _site_tensor(art)
    path = save_intervention(art, tmp_path / "ok")

    def widen(t: dict[str, torch.Tensor]) -> None:
        t[name] = torch.cat([t[name], torch.zeros(1)])

    bad = _tamper(path, tmp_path / "bad.safetensors", widen)
    label = f"at {art.specs[name].site}" if art.specs[name].role == "vector" else f"tensor '{name}'"
    size = "heads width" if name.split("/")[-1].startswith("heads") else "hidden size"
    with pytest.raises(VectorError, match=rf"^{what} {label} has width 65 but its metadata says {size} 64$"):
        load_intervention(bad)
    with pytest.raises(VectorError, match="has width 65"):
        load_vector(bad, tiny)


@pytest.mark.parametrize("kind", KINDS)
def test_refuses_missing_layer(kind, tiny, tmp_path) -> None:
    """A model of the same name with 2 layers lacks layer 3, where every kind here has a site (ITI: also 2)."""
    what = "vector" if kind == "vector" else f"{kind} artifact"
    shallow = tiny_model("llama", n_layers=2)
    assert shallow.name == tiny.name
    path = save_intervention(BUILD[kind](tiny), tmp_path / kind)
    with pytest.raises(VectorError, match=rf"^{what} has a (residual|heads) site at layer [23]; the model has layers 0..1$"):
        load_intervention(path, shallow)
    with pytest.raises(VectorError, match="site at layer [23]; the model has layers 0..1"):
        load_vector(path, shallow)


@pytest.mark.parametrize("kind", KINDS)
def test_refuses_nan(kind, tiny, tmp_path) -> None:
    what = "vector" if kind == "vector" else f"{kind} artifact"
    art = BUILD[kind](tiny)
    name = _site_tensor(art)
    path = save_intervention(art, tmp_path / "ok")

    def poison(t: dict[str, torch.Tensor]) -> None:
        t[name][5] = float("nan")

    bad = _tamper(path, tmp_path / "nan.safetensors", poison)
    label = f"at {art.specs[name].site}" if art.specs[name].role == "vector" else f"tensor '{name}'"
    msg = rf"^{what} {label} contains NaN or infinite values \(1 of 64 entries\)$"
    with pytest.raises(VectorError, match=msg):
        load_intervention(bad)
    with pytest.raises(VectorError, match=msg):
        load_intervention(bad, tiny)
    art.tensors[name] = art.tensors[name].clone()
    art.tensors[name][0] = float("inf")
    with pytest.raises(VectorError, match=msg.replace("NaN", "NaN")):
        save_intervention(art, tmp_path / "refused")
    assert not (tmp_path / "refused.safetensors").exists()


def test_iti_tensors_are_checked_against_the_model(tiny, tmp_path) -> None:
    """Non-site tensors are checked by their named dimensions, and every float one for NaN."""
    path = save_intervention(_iti(tiny), tmp_path / "iti")

    def narrow(t: dict[str, torch.Tensor]) -> None:
        t["probes/weights"] = t["probes/weights"][..., :15].contiguous()

    bad = _tamper(path, tmp_path / "narrow.safetensors", narrow)
    with pytest.raises(VectorError, match=r"^iti artifact tensor 'probes/weights' has shape \(4, 4, 15\); its "
                                          r"metadata's layers x heads x head_dim is \(4, 4, 16\)$"):
        load_intervention(bad)

    def poison(t: dict[str, torch.Tensor]) -> None:
        t["sigma"][2, 1] = float("inf")

    bad = _tamper(path, tmp_path / "sigma.safetensors", poison)
    with pytest.raises(VectorError, match=r"^iti artifact tensor 'sigma' contains NaN or infinite values "
                                          r"\(1 of 16 entries\)$"):
        load_iti(bad, tiny)
    # a model with more heads per layer (same width): the per-head layout no longer fits
    other = tiny_model("llama", n_heads=8, n_kv_heads=2)
    with pytest.raises(VectorError, match=r"^iti artifact was made for another model \('tiny-llama'\): 4 heads of "
                                          r"16, not the model's 8 heads of 8 \('tiny-llama'\)$"):
        load_iti(path, other)


def test_file_errors(tiny, tmp_path) -> None:
    path = save_intervention(_gate(tiny), tmp_path / "g")

    def add(t: dict[str, torch.Tensor]) -> None:
        t["stray"] = torch.zeros(2)

    with pytest.raises(VectorError, match=r"holds a tensor 'stray' that its metadata does not describe$"):
        load_intervention(_tamper(path, tmp_path / "stray.safetensors", add))

    def drop(t: dict[str, torch.Tensor]) -> None:
        del t["gate/bias"]

    with pytest.raises(VectorError, match=r"metadata lists a tensor 'gate/bias' that the file does not hold$"):
        load_intervention(_tamper(path, tmp_path / "drop.safetensors", drop))
    with pytest.raises(VectorError, match=r"^intervention file not found: .*nope.safetensors$"):
        load_intervention(tmp_path / "nope")
    probe_only = InterventionArtifact("probe", {"probe/weights": torch.zeros(4, 64)},
                                      {"probe/weights": TensorSpec("probe_weights", dims=("layers", "hidden"))},
                                      ModelIdentity.of(tiny))
    p = save_intervention(probe_only, tmp_path / "probe")
    assert load_intervention(p, tiny).kind == "probe"
    with pytest.raises(VectorError, match=r"probe.safetensors': this probe artifact holds no steering vector"):
        load_vector(p)
    with pytest.raises(ValueError, match="^tensor 'b' has no spec$"):
        InterventionArtifact("x", {"b": torch.zeros(1)}, {})
    with pytest.raises(ValueError, match="^unknown dimension 'width': use one of layers, heads, head_dim, hidden, "
                                         r"heads_width or '\*'$"):
        TensorSpec("w", dims=("width",))
    with pytest.raises(ValueError, match="takes no dims"):
        TensorSpec("w", site="residual.1", dims=("hidden",))
    with pytest.raises(VectorError, match="metadata is not plain JSON"):
        save_intervention(InterventionArtifact("x", {"b": torch.zeros(1)}, {"b": TensorSpec("b", dims=("*",))},
                                               params={"bad": object()}), tmp_path / "x")
