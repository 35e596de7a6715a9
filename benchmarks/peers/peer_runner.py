"""Timing runner for a peer steering library, run inside that library's own virtualenv.

Started by ``benchmarks/steer_overhead.py`` as ``PYTHON peer_runner.py --lib LIB`` and driven
through a line protocol: one JSON object per line on stdin, one JSON reply per line on stdout.
Everything else the libraries print goes to stderr, so stdout carries only the protocol.

Requests::

    {"op": "init", "model_dir": ..., "threads": 1, "layer": 15,
     "vectors": {"0": [...576 floats...], ...}, "inputs": {"8": {"input_ids": [[...]], "attention_mask": [[...]]}}}
    {"op": "run", "setting": "plain" | "one" | "all", "batch": 8, "tokens": 64}
    {"op": "quit"}

Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. A ``run`` reply carries the
wall time and the process CPU time of the timed call and the generated token ids (prompt
excluded), one list per row.

``setting``: ``plain`` is ``model.generate`` without steering (this venv's own baseline, since
the peer may pin another transformers); ``one`` steers the output of decoder layer ``layer``;
``all`` steers the output of every decoder layer. Both peers index layers like steerlab does
(``model.model.layers[i]``'s output, i.e. HF ``hidden_states[i + 1]``), at every token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any

LIBS = ("steering-vectors", "repeng")


def _versions(lib: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in (lib, "transformers", "torch", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _load_model(model_dir: str) -> tuple[Any, list[str]]:
    """Load the de-quantised embedded model; patch config keys an older transformers misses."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    notes: list[str] = []
    config = AutoConfig.from_pretrained(model_dir)
    with open(os.path.join(model_dir, "config.json")) as f:
        raw = json.load(f)
    # transformers 5 writes RoPE settings as ``rope_parameters``; 4.x reads ``rope_theta`` and would
    # silently fall back to its default base (10000), which changes every output
    rope = raw.get("rope_parameters") or {}
    if "rope_theta" not in raw and "rope_theta" in rope and int(transformers.__version__.split(".")[0]) < 5:
        config.rope_theta = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            config.rope_scaling = dict(rope)
        notes.append(f"config: set rope_theta={rope['rope_theta']} from rope_parameters (transformers {transformers.__version__})")
    model = AutoModelForCausalLM.from_pretrained(model_dir, config=config)
    model = model.float().eval()
    # never stop at EOS: every setting generates exactly the requested number of tokens
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = raw.get("pad_token_id", 2)
    return model, notes


class Runner:
    def __init__(self, lib: str) -> None:
        self.lib = lib
        self.model: Any = None
        self.inputs: dict[int, dict[str, Any]] = {}
        self.layer = 15
        self.n_layers = 0
        self.vectors: dict[int, Any] = {}
        self._repeng_cm: Any = None
        self._repeng_setting: str | None = None

    def init(self, req: dict[str, Any]) -> dict[str, Any]:
        import torch

        torch.set_num_threads(int(req["threads"]))
        if self.lib == "steering-vectors":
            import steering_vectors  # noqa: F401  (fail early if missing)
        else:
            import repeng  # noqa: F401
        self.model, notes = _load_model(req["model_dir"])
        self.n_layers = len(self.model.model.layers)
        self.layer = int(req["layer"])
        self.vectors = {int(k): torch.tensor(v, dtype=torch.float32) for k, v in req["vectors"].items()}
        for b, enc in req["inputs"].items():
            self.inputs[int(b)] = {k: torch.tensor(v, dtype=torch.long) for k, v in enc.items()}
        return {"versions": _versions(self.lib), "notes": notes, "threads": torch.get_num_threads(),
                "transformers_model_class": type(self.model).__name__}

    def _layers(self, setting: str) -> list[int]:
        return [self.layer] if setting == "one" else list(range(self.n_layers))

    def _generate(self, model: Any, enc: dict[str, Any], tokens: int) -> Any:
        return model.generate(**enc, max_new_tokens=tokens, do_sample=False)

    def _run_sv(self, setting: str, enc: dict[str, Any], tokens: int) -> tuple[float, float, Any]:
        from steering_vectors import SteeringVector

        sv = SteeringVector({i: self.vectors[i] for i in self._layers(setting)}, layer_type="decoder_block")
        t0, c0 = time.perf_counter(), time.process_time()
        with sv.apply(self.model, multiplier=1.0, min_token_index=0):
            out = self._generate(self.model, enc, tokens)
        return time.perf_counter() - t0, time.process_time() - c0, out

    def _repeng_wrap(self, setting: str) -> Any:
        """(Re)wrap the decoder layers for this setting; done outside the timed region."""
        from repeng import ControlModel

        if self._repeng_setting != setting:
            if self._repeng_cm is not None:
                self._repeng_cm.unwrap()
            self._repeng_cm = ControlModel(self.model, self._layers(setting))
            self._repeng_setting = setting
        return self._repeng_cm

    def _run_repeng(self, setting: str, enc: dict[str, Any], tokens: int) -> tuple[float, float, Any]:
        from repeng import ControlVector

        cm = self._repeng_wrap(setting)
        vec = ControlVector(model_type=self.model.config.model_type,
                            directions={i: self.vectors[i].numpy() for i in self._layers(setting)})
        t0, c0 = time.perf_counter(), time.process_time()
        cm.set_control(vec, 1.0)
        out = self._generate(cm, enc, tokens)
        cm.reset()
        return time.perf_counter() - t0, time.process_time() - c0, out

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        import torch

        setting, batch, tokens = req["setting"], int(req["batch"]), int(req["tokens"])
        enc = self.inputs[batch]
        with torch.no_grad():
            if setting == "plain":
                if self._repeng_cm is not None:  # plain means an unwrapped model
                    self._repeng_cm.unwrap()
                    self._repeng_cm, self._repeng_setting = None, None
                t0, c0 = time.perf_counter(), time.process_time()
                out = self._generate(self.model, enc, tokens)
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            elif setting in ("one", "all"):
                seconds, cpu, out = (self._run_sv if self.lib == "steering-vectors" else self._run_repeng)(setting, enc, tokens)
            else:
                raise ValueError(f"unknown setting {setting!r}")
        plen = enc["input_ids"].shape[1]
        gen = out[:, plen:].tolist()
        return {"seconds": seconds, "cpu_seconds": cpu, "tokens": gen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", required=True, choices=LIBS)
    args = ap.parse_args()
    proto = sys.stdout
    sys.stdout = sys.stderr  # libraries' prints must not corrupt the protocol
    runner = Runner(args.lib)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req: dict[str, Any] = {}
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "quit":
                reply: dict[str, Any] = {"ok": True}
            elif op == "init":
                reply = {"ok": True, **runner.init(req)}
            elif op == "run":
                reply = {"ok": True, **runner.run(req)}
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as e:  # report, keep serving: one failing setting must not end the run
            traceback.print_exc(file=sys.stderr)
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}".strip()[:500]}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()
        if req.get("op") == "quit":
            break


if __name__ == "__main__":
    main()
