"""Fitting: mean-diff against plain torch, PCA/probe directions on planted data, streaming parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerlab.fit import (ContrastPair, fit_vector, mean_difference, pca_direction, pca_from_second_moment,
                          probe_direction)

PAIRS = [
    ContrastPair("I love this, it is wonderful", "I hate this, it is awful"),
    ContrastPair("What a great day", "What a terrible day"),
    ContrastPair("She smiled with joy", "She cried with grief"),
    ContrastPair("Best meal ever", "Worst meal ever"),
]
QA = [
    ContrastPair(" Paris.", " Berlin.", prompt="Q: What is the capital of France?\nA:"),
    ContrastPair(" Four.", " Five.", prompt="Q: What is two plus two?\nA:"),
    ContrastPair(" Yes, it is round.", " No, it is flat.", prompt="Q: Is the Earth round?\nA:"),
]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def _planted(n: int, d: int, seed: int, shift: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(d, generator=g, dtype=torch.float64)
    direction /= direction.norm()
    return direction, torch.randn(n, d, generator=g, dtype=torch.float64) * 0.5 + shift * direction


# ---------------------------------------------------------------------------------------------
# against an independent computation


@pytest.mark.slow
def test_mean_diff_matches_plain_hidden_states(embedded) -> None:
    """residual.L = decoder block L's output = hidden_states[L + 1]; last token; one text at a time."""
    layers = [3, 17]
    vec = fit_vector(embedded, PAIRS, layers, method="mean_diff", batch_size=8)

    def last_hidden(text: str) -> tuple[torch.Tensor, ...]:
        ids = embedded.tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():  # the decoder stack alone (no LM head), unpadded, one text
            hs = embedded.model.model(input_ids=ids, output_hidden_states=True).hidden_states
        return tuple(h[0, -1].double() for h in hs)

    pos_h = [last_hidden(p.positive) for p in PAIRS]
    neg_h = [last_hidden(p.negative) for p in PAIRS]
    for layer in layers:
        pos = torch.stack([h[layer + 1] for h in pos_h]).mean(0)
        neg = torch.stack([h[layer + 1] for h in neg_h]).mean(0)
        expect = (pos - neg).float()
        got = vec.vectors[f"residual.{layer}"]
        assert got.shape == (576,) and got.dtype == torch.float32
        # float32 through 18 layers with |x| up to ~2e4 in one channel: compare relatively
        assert float((got - expect).norm() / expect.norm()) < 1e-4
        torch.testing.assert_close(got, expect, atol=5e-3, rtol=1e-4)
    m = vec.meta
    assert (m.model_name, m.architecture, m.hidden_size, m.n_layers, m.heads_width) == (
        "SmolLM2-135M-Instruct", "llama", 576, 30, 576)
    assert (m.method, m.positions, m.extra["n_pairs"], m.extra["site_kind"]) == (
        "mean_diff", "last", 4, "residual")
    assert m.library_version == "0.1.0"


def test_prompt_pairs_use_answer_span(tiny) -> None:
    """With a prompt: 'last' = the answer's last token; 'answer' = mean over the answer's tokens."""
    last = fit_vector(tiny, QA, [1], positions="last")
    span = fit_vector(tiny, QA, [1], positions="answer")

    def hidden(prompt: str, answer: str) -> torch.Tensor:
        ids = tiny.tokenizer(prompt + answer, return_tensors="pt")["input_ids"]
        n_prompt = len(tiny.tokenizer(prompt)["input_ids"])
        with torch.no_grad():
            return tiny.model(input_ids=ids, output_hidden_states=True).hidden_states[2][0].double(), n_prompt

    exp_last, exp_span = torch.zeros(64, dtype=torch.float64), torch.zeros(64, dtype=torch.float64)
    for p in QA:
        for sign, ans in ((1, p.positive), (-1, p.negative)):
            h, n_prompt = hidden(p.prompt, ans)
            exp_last += sign * h[-1] / len(QA)
            exp_span += sign * h[n_prompt:].mean(0) / len(QA)
    torch.testing.assert_close(last.vectors["residual.1"], exp_last.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(span.vectors["residual.1"], exp_span.float(), atol=1e-5, rtol=1e-5)
    assert span.meta.positions == "answer" and span.meta.extra["with_prompt"] is True


# ---------------------------------------------------------------------------------------------
# pure functions on synthetic data


def test_mean_difference() -> None:
    pos = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    neg = torch.tensor([[0.0, 1.0], [0.0, 3.0], [0.0, 2.0]])
    torch.testing.assert_close(mean_difference(pos, neg), torch.tensor([2.0, 1.0]))
    with pytest.raises(ValueError, match="width mismatch"):
        mean_difference(pos, torch.zeros(2, 3))


def test_pca_recovers_planted_direction() -> None:
    direction, diffs = _planted(200, 32, seed=1)
    v = pca_direction(diffs)
    assert _cos(v, direction) > 0.99
    # sign: positives project higher; length: the mean difference's projection on the direction
    mean = diffs.mean(0)
    assert float(mean @ v.double()) > 0
    u = v.double() / v.double().norm()
    assert float(v.double().norm()) == pytest.approx(float(mean @ u), rel=1e-5)
    flipped = pca_direction(-diffs)
    torch.testing.assert_close(flipped, -v, atol=1e-6, rtol=1e-6)
    # the streaming form (from moments) gives the same vector
    streamed = pca_from_second_moment(diffs.T @ diffs / diffs.shape[0], mean)
    torch.testing.assert_close(streamed, v, atol=1e-6, rtol=1e-6)


def test_pca_centered_matches_sklearn_component() -> None:
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(2)
    spread = torch.randn(16, generator=g, dtype=torch.float64)
    diffs = torch.randn(300, 1, generator=g, dtype=torch.float64) * 4 * spread / spread.norm()
    diffs += torch.randn(300, 16, generator=g, dtype=torch.float64) * 0.3 + 1.0
    comp = torch.from_numpy(PCA(n_components=1).fit(diffs.numpy()).components_[0])
    v = pca_direction(diffs, center=True)
    assert abs(_cos(v, comp)) > 0.9999
    # uncentered and centered differ here: the shared shift (1, 1, ...) dominates the uncentered one
    assert abs(_cos(pca_direction(diffs), comp)) < 0.9


def test_probe_recovers_planted_direction() -> None:
    g = torch.Generator().manual_seed(3)
    d = 24
    direction = torch.randn(d, generator=g, dtype=torch.float64)
    direction /= direction.norm()
    noise = torch.randn(2000, d, generator=g, dtype=torch.float64)
    y = torch.tensor([1, 0] * 1000)
    x = noise + (y.double()[:, None] * 2 - 1) * 1.5 * direction + 5.0  # offset must not matter
    v = probe_direction(x, y)
    assert _cos(v, direction) > 0.97
    md = x[y == 1].mean(0) - x[y == 0].mean(0)
    u = v.double() / v.double().norm()
    assert float(md @ v.double()) > 0 and float(v.double().norm()) == pytest.approx(float(md @ u), rel=1e-5)
    with pytest.raises(ValueError, match="both classes"):
        probe_direction(x, torch.ones(2000, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# fit_vector on the tiny model


@pytest.mark.parametrize("method", ["mean_diff", "pca"])
@pytest.mark.parametrize("positions", ["last", "all"])
def test_streaming_equals_stored(tiny, method, positions) -> None:
    stored = fit_vector(tiny, PAIRS, [0, 2], method=method, positions=positions, batch_size=3)
    streamed = fit_vector(tiny, PAIRS, [0, 2], method=method, positions=positions, batch_size=3,
                          streaming=True)
    assert stored.vectors.keys() == streamed.vectors.keys() == {"residual.0", "residual.2"}
    for k in stored.vectors:
        torch.testing.assert_close(streamed.vectors[k], stored.vectors[k], atol=1e-6, rtol=1e-5)
    assert streamed.meta.extra["streaming"] is True and stored.meta.positions == positions


def test_streaming_answer_span(tiny) -> None:
    stored = fit_vector(tiny, QA, [1, 3], method="pca", positions="answer")
    streamed = fit_vector(tiny, QA, [1, 3], method="pca", positions="answer", streaming=True)
    for k in stored.vectors:
        torch.testing.assert_close(streamed.vectors[k], stored.vectors[k], atol=1e-6, rtol=1e-5)


def test_methods_agree_in_sign_and_heads_width(tiny) -> None:
    md = fit_vector(tiny, PAIRS, [1], method="mean_diff")
    for method in ("pca", "probe"):
        v = fit_vector(tiny, PAIRS, [1], method=method)
        assert float(v.vectors["residual.1"] @ md.vectors["residual.1"]) > 0
        assert v.meta.method == method
    heads = fit_vector(tiny, PAIRS, [-1], site_kind="heads")
    assert list(heads.vectors) == ["heads.3"]
    assert heads.vectors["heads.3"].shape == (tiny.adapter.heads_width,)


def test_fit_errors(tiny) -> None:
    with pytest.raises(ValueError, match="no contrast pairs given"):
        fit_vector(tiny, [], [1])
    with pytest.raises(ValueError, match="pair 1 has an empty negative text"):
        fit_vector(tiny, [PAIRS[0], ContrastPair("fine", "  ")], [1])
    with pytest.raises(ValueError, match="pair 0 has an empty positive text"):
        fit_vector(tiny, [ContrastPair("", "x")], [1])
    with pytest.raises(ValueError, match="empty prompt"):
        fit_vector(tiny, [ContrastPair("a", "b", prompt="")], [1])
    with pytest.raises(ValueError, match="unknown method 'svm'"):
        fit_vector(tiny, PAIRS, [1], method="svm")
    with pytest.raises(ValueError, match="use streaming=False"):
        fit_vector(tiny, PAIRS, [1], method="probe", streaming=True)
    with pytest.raises(ValueError, match="needs pairs with a prompt"):
        fit_vector(tiny, PAIRS, [1], positions="answer")
    with pytest.raises(ValueError, match="layer 7 out of range"):
        fit_vector(tiny, PAIRS, [7])


def test_pca_sign_rule_on_model(tiny) -> None:
    """The documented sign rule at every layer: positives project higher than their negatives on average
    (``mean(d) . v > 0``). On the random tiny model repeng's per-pair vote can disagree with it (layer 0:
    1 of 4 pairs), which is why the rule, not the vote, is what steerlab promises."""
    from steerlab.capture import capture

    sites = [f"residual.{layer}" for layer in range(tiny.adapter.n_layers)]
    x = capture(tiny, [s for p in PAIRS for s in (p.positive, p.negative)], sites)
    for layer, site in enumerate(sites):
        v = fit_vector(tiny, PAIRS, [layer], method="pca").vectors[site]
        d = (x[site][0::2] - x[site][1::2]) @ v
        assert float(d.mean()) > 0, (site, d)
        # scaled to the mean difference's projection on the unit direction: v = (mean(d) . u) u
        u = v / v.norm()
        assert float(v.norm()) == pytest.approx(float((x[site][0::2] - x[site][1::2]).mean(0) @ u), rel=1e-4)


@pytest.mark.slow
def test_pca_sign_matches_repeng_vote_on_embedded(embedded) -> None:
    """repeng's vote (per pair: does the positive project higher than its negative?) is unanimous for the
    fitted PCA vector on the embedded model at layers 6..27: 4 of 4 pairs each."""
    from steerlab.capture import capture

    layers = list(range(6, 28, 3))
    x = capture(embedded, [s for p in PAIRS for s in (p.positive, p.negative)], [f"residual.{l}" for l in layers])
    for layer in layers:
        site = f"residual.{layer}"
        v = fit_vector(embedded, PAIRS, [layer], method="pca").vectors[site]
        proj = (x[site] @ v).numpy()
        assert int((proj[0::2] > proj[1::2]).sum()) == len(PAIRS), (layer, proj)
