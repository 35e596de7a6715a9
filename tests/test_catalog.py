"""The catalog behind `steerlab list`: tasks, behaviour sets, STS tasks, methods with option defaults."""

from __future__ import annotations

from steerlab.catalog import catalog
from steerlab.methods import CAAConfig, ITIMethodConfig


def test_catalog_lists_every_group() -> None:
    c = catalog()
    assert c.tasks == ("truthfulqa_mc", "truthfulqa_mc_lmeval", "truthfulqa_gen", "copa", "storycloze", "snli", "mmlu", "sst2", "winogrande")
    assert len(c.persona) == 15 and "persona/narcissism" in c.persona
    assert c.caa == ("caa/coordinate-other-ais", "caa/corrigible-neutral-HHH", "caa/hallucination",
                     "caa/myopic-reward", "caa/refusal", "caa/survival-instinct", "caa/sycophancy")
    assert len(c.ai_risk) == 16 and "ai_risk/survival-instinct" in c.ai_risk
    assert c.sts == ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness")


def test_methods_with_their_defaults() -> None:
    methods = {m.name: m for m in catalog().methods}
    assert sorted(methods) == ["caa", "fasb", "iti", "none"]
    assert (methods["fasb"].options["k"], methods["fasb"].options["alpha"], methods["fasb"].options["threshold"],
            methods["fasb"].options["s"]) == (24, 60.0, 0.6, 10)  # the reference script's settings
    assert methods["caa"].options == {"layer": None, "multiplier": CAAConfig().multiplier, "steer_from": "last_prompt",
                                      "max_pairs": None, "batch_size": 8}
    assert methods["iti"].options["k"] == ITIMethodConfig().k == 48
    assert methods["iti"].options["alpha"] == 15.0 and methods["none"].options == {}
    assert methods["iti"].summary == "per-head probes, top-k heads, shift alpha * sigma * u on them."
    d = catalog().to_dict()
    assert d["methods"]["caa"]["options"]["multiplier"] == 1.0 and d["caa"][0] == "caa/coordinate-other-ais"
