"""Artifacts: safetensors round trip with metadata, atomic writes, clear errors, GGUF export."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import steerlab.artifacts as art
import steerlab.files as files
from steerlab.artifacts import VectorError, check_vector, export_gguf, import_gguf, load_vector, save_vector
from steerlab.testing import tiny_model
from steerlab.vectors import SteeringVector, VectorMeta


def _meta(lm, **kw) -> VectorMeta:
    a = lm.adapter
    base = dict(model_name=lm.name, architecture=a.family, hidden_size=a.hidden_size, n_layers=a.n_layers,
                heads_width=a.heads_width, method="mean_diff", positions="last")
    base.update(kw)
    return VectorMeta(**base)


def _vec(lm, layers=(1, 2), kind="residual", seed=0, **meta) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    width = lm.adapter.heads_width if kind == "heads" else lm.adapter.hidden_size
    vectors = {f"{kind}.{layer}": torch.randn(width, generator=g) for layer in layers}
    return SteeringVector(vectors, _meta(lm, **meta))


def _raw_save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> None:
    save_file(tensors, str(path), metadata=metadata)


def test_round_trip_and_header(tiny, tmp_path) -> None:
    vec = _vec(tiny, layers=(0, 3), extra={"n_pairs": 7})
    vec = SteeringVector({**vec.vectors, "heads.2": torch.arange(64, dtype=torch.float32)},
                         replace(vec.meta, heads={"heads.2": (1, 3)}))
    path = save_vector(vec, tmp_path / "happy")
    assert path == tmp_path / "happy.safetensors"
    assert sorted(os.listdir(tmp_path)) == ["happy.json", "happy.safetensors"]
    # the header is plain JSON (no pickle): 8-byte little-endian length, then '{'
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header["__metadata__"]["steerlab"])
    assert header["__metadata__"]["format"] == "steerlab.intervention/1"
    assert meta["kind"] == "vector" and meta["method"] == "mean_diff" and meta["positions"] == "last"
    assert meta["model"] == {"name": "tiny-llama", "architecture": "llama", "hidden_size": 64, "n_layers": 4,
                             "n_heads": 0, "head_dim": 0, "heads_width": 64}
    assert meta["tensors"] == {"heads.2": {"role": "vector", "site": "heads.2", "heads": [1, 3]},
                               "residual.0": {"role": "vector", "site": "residual.0"},
                               "residual.3": {"role": "vector", "site": "residual.3"}}
    assert header["residual.3"]["shape"] == [64] and header["residual.3"]["dtype"] == "F32"
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["steerlab"] == header["__metadata__"]["steerlab"]
    side = json.loads((tmp_path / "happy.json").read_text())
    assert side["meta"]["method"] == "mean_diff" and side["meta"]["extra"] == {"n_pairs": 7}
    assert side["sites"]["heads.2"]["norm"] == pytest.approx(float(torch.arange(64.0).norm()), rel=1e-6)
    assert side["sites"] == side["tensors"] and sorted(side["sites"]) == ["heads.2", "residual.0", "residual.3"]

    back = load_vector(path, tiny)
    assert back.meta == vec.meta
    assert back.vectors.keys() == vec.vectors.keys()
    for k in vec.vectors:
        assert torch.equal(back.vectors[k], vec.vectors[k])
    assert [s.heads for s in back.sites if s.kind.value == "heads"] == [(1, 3)]
    assert load_vector(tmp_path / "happy").meta == vec.meta  # suffix optional; no model check
    with pytest.raises(ValueError, match="end in .safetensors"):
        save_vector(vec, tmp_path / "happy.pt")


def test_atomic_write_survives_failure_mid_write(tiny, tmp_path, monkeypatch) -> None:
    old = _vec(tiny, seed=1)
    path = save_vector(old, tmp_path / "v.safetensors")
    before = path.read_bytes()
    before_side = (tmp_path / "v.json").read_bytes()

    def half_then_crash(f, data: bytes) -> None:
        f.write(data[: len(data) // 2])
        f.flush()
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(files, "_write_all", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        save_vector(_vec(tiny, seed=2), path)
    monkeypatch.undo()
    assert path.read_bytes() == before and (tmp_path / "v.json").read_bytes() == before_side
    assert sorted(os.listdir(tmp_path)) == ["v.json", "v.safetensors"]  # temp file cleaned up
    assert torch.equal(load_vector(path, tiny).vectors["residual.1"], old.vectors["residual.1"])

    # a failure at the last step (the rename) leaves the old file too
    def no_replace(src, dst) -> None:
        raise OSError("rename failed (simulated)")

    monkeypatch.setattr(art.os, "replace", no_replace)
    with pytest.raises(OSError, match="rename failed"):
        save_vector(_vec(tiny, seed=3), path)
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["v.json", "v.safetensors"]

    # and a successful save replaces it
    save_vector(_vec(tiny, seed=4), path)
    assert path.read_bytes() != before


def test_load_errors(tiny, tmp_path) -> None:
    with pytest.raises(VectorError, match="vector file not found: .*nope.safetensors"):
        load_vector(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(VectorError, match="is not a valid safetensors file"):
        load_vector(junk)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(save_vector(_vec(tiny), tmp_path / "full.safetensors").read_bytes()[:100])
    with pytest.raises(VectorError, match="is not a valid safetensors file"):
        load_vector(truncated)
    bare = tmp_path / "bare.safetensors"
    _raw_save(bare, {"residual.1": torch.zeros(64)}, None)
    with pytest.raises(VectorError, match="has no steerlab metadata"):
        load_vector(bare)
    bad_json = tmp_path / "badjson.safetensors"
    _raw_save(bad_json, {"residual.1": torch.zeros(64)}, {"steerlab": "{not json"})
    with pytest.raises(VectorError, match="malformed steerlab metadata"):
        load_vector(bad_json)
    meta = json.dumps(_meta(tiny).to_json())
    odd = tmp_path / "odd.safetensors"
    _raw_save(odd, {"weights": torch.zeros(64)}, {"steerlab": meta})
    with pytest.raises(VectorError, match="tensor 'weights' that is not a site key"):
        load_vector(odd)
    nan = tmp_path / "nan.safetensors"
    _raw_save(nan, {"residual.1": torch.tensor([1.0, float("nan")] + [0.0] * 62)}, {"steerlab": meta})
    with pytest.raises(VectorError, match=r"residual.1 contains NaN or infinite values \(1 of 64 entries\)"):
        load_vector(nan)
    deep = tmp_path / "deep.safetensors"
    _raw_save(deep, {"residual.9": torch.zeros(64)}, {"steerlab": meta})
    with pytest.raises(VectorError, match="site at layer 9; its model has layers 0..3"):
        load_vector(deep)
    wide = tmp_path / "wide.safetensors"
    _raw_save(wide, {"residual.1": torch.zeros(65)}, {"steerlab": meta})
    with pytest.raises(VectorError, match="width 65 but its metadata says hidden size 64"):
        load_vector(wide)
    with pytest.raises(VectorError, match="NaN or infinite"):
        save_vector(_vec(tiny) * float("inf"), tmp_path / "inf.safetensors")


def test_load_checks_the_target_model(tiny, tmp_path) -> None:
    # wrong hidden size (same family)
    big = tiny_model("llama", hidden=128, n_heads=4)
    path = save_vector(_vec(big), tmp_path / "big.safetensors")
    with pytest.raises(VectorError, match="hidden size 128 does not match the model's 64"):
        load_vector(path, tiny)
    # another model: other architecture
    neox = tiny_model("gpt_neox")
    path = save_vector(_vec(neox), tmp_path / "neox.safetensors")
    with pytest.raises(VectorError, match="made for another model: a gpt_neox model \\('tiny-gpt_neox'\\)"):
        load_vector(path, tiny)
    # another model: same family and width, other name and depth
    deep = tiny_model("llama", n_layers=6)
    deep.name = "tiny-llama-6"
    path = save_vector(_vec(deep, layers=(1,)), tmp_path / "deep.safetensors")
    msg = r"made for another model: 'tiny-llama-6' \(6 layers\), not 'tiny-llama' \(4 layers\)"
    with pytest.raises(VectorError, match=msg):
        load_vector(path, tiny)
    # a layer the model does not have (metadata silent on depth)
    path = save_vector(_vec(tiny, layers=(5,), n_layers=0), tmp_path / "l5.safetensors")
    with pytest.raises(VectorError, match="residual site at layer 5; the model has layers 0..3"):
        load_vector(path, tiny)
    # same family and shapes, another name (a fine-tune): accepted
    check_vector(_vec(tiny, model_name="my-finetune"), tiny)


def test_export_gguf(tiny, tmp_path) -> None:
    import gguf

    vec = _vec(tiny, layers=(1, 3, 2))
    path = export_gguf(vec, tmp_path / "v.gguf")
    reader = gguf.GGUFReader(str(path))
    fields = {name: reader.get_field(name).contents() for name in
              ("general.architecture", "controlvector.model_hint", "controlvector.layer_count")}
    assert fields == {"general.architecture": "controlvector", "controlvector.model_hint": "llama",
                      "controlvector.layer_count": 3}
    names = [t.name for t in reader.tensors]
    assert names == ["direction.1", "direction.2", "direction.3"]
    for t in reader.tensors:
        layer = int(t.name.split(".")[1])
        assert t.tensor_type == gguf.GGMLQuantizationType.F32 and list(t.shape) == [64]
        np.testing.assert_array_equal(np.asarray(t.data), vec.vectors[f"residual.{layer}"].numpy())
    assert sorted(os.listdir(tmp_path)) == ["v.gguf"]


def test_export_gguf_refuses_other_sites(tiny, tmp_path) -> None:
    mixed = _vec(tiny, layers=(1,)) + _vec(tiny, layers=(2,), kind="heads")
    with pytest.raises(VectorError, match="residual-stream directions only; this vector also has heads.2"):
        export_gguf(mixed, tmp_path / "m.gguf")
    with pytest.raises(VectorError, match="cannot steer layer 0"):
        export_gguf(_vec(tiny, layers=(0, 1)), tmp_path / "z.gguf")
    assert not list(tmp_path.iterdir())


def test_arithmetic_across_models_raises(tiny) -> None:
    """Vectors of two different models never combine: another family, another width, or another model of
    the very same shape; vectors of one model add site by site."""
    a, b = _vec(tiny, seed=0), _vec(tiny, seed=1)
    both = a + b
    torch.testing.assert_close(both.vectors["residual.1"], a.vectors["residual.1"] + b.vectors["residual.1"])
    torch.testing.assert_close((a - b).vectors["residual.2"], a.vectors["residual.2"] - b.vectors["residual.2"])
    gpt2 = tiny_model("gpt2")
    with pytest.raises(ValueError, match=r"^cannot combine vectors of different models: model_name differs "):
        a + _vec(gpt2)
    with pytest.raises(ValueError, match=r"^cannot combine vectors of different models: architecture differs "
                                         r"\(llama vs gpt2\)$"):
        a - _vec(gpt2, model_name=tiny.name)
    twin = _vec(tiny, seed=1, model_name="another-llama-of-this-shape")
    with pytest.raises(ValueError, match=r"^cannot combine vectors of different models: model_name differs "
                                         rf"\({tiny.name} vs another-llama-of-this-shape\)$"):
        a + twin
    wide = replace(_vec(tiny, seed=1), meta=replace(a.meta, hidden_size=a.meta.hidden_size * 2))
    with pytest.raises(ValueError, match=r"^cannot combine vectors of different models: hidden_size differs "
                                         r"\(64 vs 128\)$"):
        a + wide


def _old_format_file(path: Path, vec: SteeringVector) -> Path:
    """A vector file exactly as ``save_vector`` wrote it before the intervention format (``steerlab.vector/1``):
    bare site keys as tensor names, the VectorMeta JSON under ``steerlab``."""
    meta = {"steerlab": json.dumps(vec.meta.to_json(), sort_keys=True), "format": "steerlab.vector/1"}
    _raw_save(path, {k: v.contiguous() for k, v in vec.vectors.items()}, meta)
    return path


def test_vector_files_of_the_old_format_still_load(tiny, tmp_path) -> None:
    vec = _vec(tiny, layers=(1, 3), extra={"n_pairs": 3})
    vec = SteeringVector({**vec.vectors, "heads.2": torch.arange(64, dtype=torch.float32)},
                         replace(vec.meta, heads={"heads.2": (0, 2)}))
    old = _old_format_file(tmp_path / "old.safetensors", vec)
    back = load_vector(old, tiny)
    assert back.meta == vec.meta and back.vectors.keys() == vec.vectors.keys()
    assert all(torch.equal(back.vectors[k], vec.vectors[k]) for k in vec.vectors)
    loaded = art.load_intervention(old, tiny)
    assert loaded.kind == "vector" and sorted(loaded.tensors) == ["heads.2", "residual.1", "residual.3"]
    assert loaded.specs["heads.2"].heads == (0, 2) and loaded.model.hidden_size == 64
    # re-saved, it is written in the new format and reads back the same
    new = save_vector(back, tmp_path / "new.safetensors")
    with safe_open(str(new), framework="pt") as f:
        assert f.metadata()["format"] == "steerlab.intervention/1"
    again = load_vector(new, tiny)
    assert again.meta == vec.meta and all(torch.equal(again.vectors[k], vec.vectors[k]) for k in vec.vectors)
    # a file from before the format key existed (metadata only) loads too
    bare_meta = tmp_path / "older.safetensors"
    _raw_save(bare_meta, {"residual.1": vec.vectors["residual.1"]}, {"steerlab": json.dumps(vec.meta.to_json())})
    assert torch.equal(load_vector(bare_meta, tiny).vectors["residual.1"], vec.vectors["residual.1"])
    # and an unknown format is refused by name
    future = tmp_path / "future.safetensors"
    _raw_save(future, {"residual.1": vec.vectors["residual.1"]},
              {"steerlab": json.dumps(vec.meta.to_json()), "format": "steerlab.vector/9"})
    with pytest.raises(VectorError, match=r"has format 'steerlab.vector/9'; this steerlab reads "
                                          r"steerlab.intervention/1 and steerlab.vector/1$"):
        load_vector(future)



def test_import_gguf_round_trip_is_bit_exact(tiny, tmp_path) -> None:
    vec = _vec(tiny, layers=(1, 3, 2))
    first = export_gguf(vec, tmp_path / "v.gguf")
    back = import_gguf(first, tiny)
    assert sorted(back.vectors) == ["residual.1", "residual.2", "residual.3"]
    for key, v in vec.vectors.items():
        assert back.vectors[key].dtype == torch.float32 and torch.equal(back.vectors[key], v.float())
    assert (back.meta.architecture, back.meta.hidden_size, back.meta.model_name, back.meta.n_layers) == \
        ("llama", 64, tiny.name, 4)
    again = export_gguf(back, tmp_path / "w.gguf")
    assert again.read_bytes() == first.read_bytes()
    assert import_gguf(first).meta.model_name == ""  # no model given: nothing claimed about it


def test_import_gguf_refuses_what_is_not_a_control_vector(tiny, tmp_path) -> None:
    import gguf

    with pytest.raises(VectorError, match="GGUF file not found"):
        import_gguf(tmp_path / "none.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    with pytest.raises(VectorError, match=r"is not a readable GGUF file \(GGUF magic invalid\)"):
        import_gguf(junk)
    other = tmp_path / "model.gguf"
    w = gguf.GGUFWriter(str(other), "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(VectorError, match="is not a control vector \\(general.architecture is 'llama'"):
        import_gguf(other)
    wide = SteeringVector({"residual.1": torch.ones(32)}, VectorMeta(architecture="llama"))
    with pytest.raises(VectorError, match="its hidden size 32 does not match the model's 64"):
        import_gguf(export_gguf(wide, tmp_path / "wide.gguf"), tiny)
