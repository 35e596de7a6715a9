"""Timing runner for llama.cpp (through llama-cpp-python), run inside ``.venv-llamacpp``.

Started by ``benchmarks/llamacpp_speed.py`` as ``.venv-llamacpp/bin/python llamacpp_runner.py`` and
driven like ``peer_runner.py``: one JSON object per line on stdin, one JSON reply per line on
stdout (llama.cpp's own logging goes to stderr, and ``verbose=False`` keeps it quiet).

Requests::

    {"op": "init", "model": "/path/model.gguf", "threads": 2, "n_ctx": 1024, "max_batch": 8,
     "cvecs": {"joyful": [["/path/joyful.gguf", 0.1]], ...}, "layer_range": null}
    {"op": "run", "cvec": null | "joyful", "tokens": [ids] or [[ids], [ids], ...], "n": 64}
    {"op": "logits", "cvec": null | "joyful", "tokens": [prompt token ids]}
    {"op": "quit"}

Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.

Control vectors are loaded the way llama.cpp's own tools do it (``common_control_vector_load`` in
``common/common.cpp``, used by ``llama-cli --control-vector-scaled FILE:SCALE``): every ``direction.N``
tensor (N >= 1, F32, 1-D) is multiplied by its scale and summed into a buffer of ``n_embd`` floats
per layer starting at layer 1; the buffer goes to ``llama_set_adapter_cvec`` with the layer range
``[1, n_layer]`` unless ``layer_range`` says otherwise (``--control-vector-layer-range``). llama.cpp
then adds ``direction.N`` to the output of decoder block N (its ``l_out``) at every position of
every sequence in the context.

A ``run`` is greedy decoding with the KV cache of one prompt or several at once (a batch of
sequences in one context, ``n_seq_max = max_batch``, ``n_ctx`` positions per sequence, as
llama.cpp's ``batched`` example): all prompts in one ``llama_decode``, then one ``llama_decode``
per step with one new token per sequence, each next token being the argmax of that sequence's
logits (EOS is not special: exactly ``n`` tokens per sequence). The reply gives the wall time of
the whole call, the time to the first new tokens (prompt pass + argmax), the process CPU time,
and the new token ids per sequence. ``logits`` returns the logits of the prompt's last position
(one forward pass).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("llama_cpp_python", "gguf", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def load_cvec(files: list[tuple[str, float]], n_embd: int, n_layer: int) -> Any:
    """The control-vector buffer llama.cpp's ``common_control_vector_load`` builds from ``files``
    (``(path, scale)`` pairs): float32, ``n_embd`` values per layer, layer 1 first, zero-padded to
    all ``n_layer - 1`` steerable layers.

    The padding matters when one context switches between vectors: ``llama_set_adapter_cvec`` only
    writes the layers its buffer covers and leaves the others as they were, so a shorter buffer
    (say ``direction.12`` alone: 12 layers) applied after a longer one would keep the old vector's
    layers 13 and up (llama.cpp's own tools apply one vector once, so they never meet this)."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader

    data = np.zeros(0, dtype=np.float32)
    for path, scale in files:
        reader = GGUFReader(path)
        for t in reader.tensors:
            head, _, idx = t.name.partition(".")
            if head != "direction" or not idx.isdigit() or int(idx) == 0:
                raise ValueError(f"{path}: tensor '{t.name}' is not direction.N with N >= 1")
            if t.tensor_type != GGMLQuantizationType.F32 or np.asarray(t.data).size != n_embd:
                raise ValueError(f"{path}: tensor '{t.name}' is not F32 of {n_embd} values")
            layer = int(idx)
            if data.size < n_embd * layer:
                data = np.concatenate([data, np.zeros(n_embd * layer - data.size, dtype=np.float32)])
            data[n_embd * (layer - 1): n_embd * layer] += np.asarray(t.data, dtype=np.float32) * np.float32(scale)
    if data.size > n_embd * (n_layer - 1):
        raise ValueError(f"direction.{data.size // n_embd} is beyond the model's last layer ({n_layer - 1})")
    return np.concatenate([data, np.zeros(n_embd * (n_layer - 1) - data.size, dtype=np.float32)])


class Runner:
    """One llama.cpp context for up to ``max_batch`` sequences, decoded together like llama.cpp's
    ``batched`` example (one ``llama_decode`` per step for all rows; the control vector is per context,
    so every row gets the same one). The high-level ``Llama`` object only loads the model."""

    def __init__(self) -> None:
        self.llm: Any = None
        self.ctx: Any = None
        self.batch: Any = None
        self.cvecs: dict[str, Any] = {}
        self.active: str | None = "unset"
        self.n_layer = 0
        self.n_embd = 0
        self.n_vocab = 0
        self.max_batch = 1
        self.layer_range: tuple[int, int] = (1, 0)

    def init(self, req: dict[str, Any]) -> dict[str, Any]:
        import llama_cpp
        from llama_cpp import Llama

        threads = int(req["threads"])
        self.max_batch = int(req.get("max_batch", 8))
        n_ctx = int(req.get("n_ctx", 1024))  # per sequence
        self.llm = Llama(model_path=req["model"], n_ctx=64, n_batch=64, n_threads=threads, n_threads_batch=threads,
                         n_gpu_layers=0, seed=0, logits_all=False, verbose=False)
        model = self.llm.model
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx * self.max_batch
        params.n_batch = params.n_ubatch = 512
        params.n_seq_max = self.max_batch
        params.n_threads = params.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        if not self.ctx:
            raise RuntimeError("llama_init_from_model failed")
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)
        self.n_layer = int(llama_cpp.llama_model_n_layer(model))
        self.n_embd = int(llama_cpp.llama_model_n_embd(model))
        self.n_vocab = int(self.llm.n_vocab())
        rng = req.get("layer_range")
        self.layer_range = (int(rng[0]), int(rng[1])) if rng else (1, self.n_layer)
        for name, files in (req.get("cvecs") or {}).items():
            self.cvecs[name] = load_cvec([(str(p), float(s)) for p, s in files], self.n_embd, self.n_layer)
        info = llama_cpp.llama_print_system_info()
        return {"versions": _versions(), "n_layer": self.n_layer, "n_embd": self.n_embd, "n_vocab": self.n_vocab,
                "threads": threads, "layer_range": list(self.layer_range), "max_batch": self.max_batch,
                "system_info": info.decode() if isinstance(info, bytes) else str(info),
                "cvec_layers": {k: int((v.reshape(-1, self.n_embd).any(-1)).sum()) for k, v in self.cvecs.items()}}

    def close(self) -> None:
        import llama_cpp

        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of ``(token, position, sequence, wants_logits)`` items."""
        import llama_cpp

        b = self.batch
        b.n_tokens = len(items)
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i] = tok, pos, 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        err = llama_cpp.llama_decode(self.ctx, b)
        if err:
            raise RuntimeError(f"llama_decode failed ({err})")

    def _logits(self, i: int) -> Any:
        import llama_cpp
        import numpy as np

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))

    def _clear(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)

    def _set_cvec(self, name: str | None) -> None:
        """Apply (or clear) a control vector, then decode one throw-away token so that llama.cpp's
        graph re-reservation after the change happens outside the timed region."""
        import ctypes

        import llama_cpp

        if name == self.active:
            return
        # the C function was renamed over time: llama_control_vector_apply (until mid 2024),
        # llama_apply_adapter_cvec, llama_set_adapter_cvec (0.3.36; the older name warns)
        apply = next(getattr(llama_cpp, f) for f in ("llama_set_adapter_cvec", "llama_apply_adapter_cvec",
                                                     "llama_control_vector_apply") if hasattr(llama_cpp, f))
        if name is None:
            err = apply(self.ctx, None, 0, self.n_embd, -1, -1)
        else:
            data = self.cvecs[name]
            ptr = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            err = apply(self.ctx, ptr, data.size, self.n_embd, *self.layer_range)
        if err:
            raise RuntimeError(f"llama_set_adapter_cvec failed ({err}) for {name!r}")
        self.active = name
        self._clear()
        self._decode([(int(self.llm.token_bos()), 0, 0, True)])
        self._clear()

    def logits(self, req: dict[str, Any]) -> dict[str, Any]:
        """The logits after the prompt (those of its last position), with control vector ``cvec`` (or none)."""
        self._set_cvec(req.get("cvec"))
        prompt = [int(t) for t in req["tokens"]]
        self._clear()
        self._decode([(t, i, 0, i == len(prompt) - 1) for i, t in enumerate(prompt)])
        return {"logits": [float(x) for x in self._logits(len(prompt) - 1)]}

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        """Greedy decoding of one or more prompts (``tokens``: a list of ids, or a list of such lists)."""
        self._set_cvec(req.get("cvec"))
        prompts = req["tokens"]
        prompts = [prompts] if prompts and isinstance(prompts[0], int) else prompts
        prompts = [[int(t) for t in p] for p in prompts]
        if not 1 <= len(prompts) <= self.max_batch:
            raise ValueError(f"{len(prompts)} prompts: this runner decodes 1..{self.max_batch} at once")
        n = int(req["n"])
        items, last = [], []
        for seq, p in enumerate(prompts):
            items += [(t, i, seq, i == len(p) - 1) for i, t in enumerate(p)]
            last.append(len(items) - 1)
        if len(items) > 512:
            raise ValueError("prompts longer than one 512-token batch in all")
        out: list[list[int]] = [[] for _ in prompts]
        self._clear()
        t0, c0 = time.perf_counter(), time.process_time()
        self._decode(items)
        for seq, i in enumerate(last):
            out[seq].append(int(self._logits(i).argmax()))
        t_first = time.perf_counter()
        for step in range(n - 1):
            self._decode([(out[seq][-1], len(p) + step, seq, True) for seq, p in enumerate(prompts)])
            for seq in range(len(prompts)):
                out[seq].append(int(self._logits(seq).argmax()))
        t_end, c_end = time.perf_counter(), time.process_time()
        return {"seconds": t_end - t0, "first_token_seconds": t_first - t0, "cpu_seconds": c_end - c0,
                "tokens": out}


def main() -> int:
    runner = Runner()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "quit":
                runner.close()
                print(json.dumps({"ok": True}), flush=True)
                return 0
            if op == "init":
                reply = runner.init(req)
            elif op == "run":
                reply = runner.run(req)
            elif op == "logits":
                reply = runner.logits(req)
            else:
                raise ValueError(f"unknown op {op!r}")
            print(json.dumps({"ok": True, **reply}), flush=True)
        except Exception as e:  # reported to the driver, which decides what to do
            traceback.print_exc(file=sys.stderr)
            print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
