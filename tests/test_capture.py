"""Capture: batched == one-by-one under left padding, position specs, early stop, streaming stats."""

from __future__ import annotations

import pytest
import torch

from steerlab.capture import (ClassStats, LastK, Mask, Moments, capture, capture_pair_stats, capture_stats,
                              describe_positions, parse_positions)
from steerlab.sites import Site

TEXTS = ["hello world", "a", "the quick brown fox jumps over", "xyz abc", "mid length text"]
PAIRS = [("Q: hi", " yes sir"), ("Q: what is it?", " no"), ("x", " maybe so, maybe not"), ("Tell me", " ok")]
TINY_SITES = ["residual.0", "heads.2", "mlp_out.1", "attn_out.3", "residual.3"]


def _assert_same(a, b, atol: float = 1e-5) -> None:
    """Same rows, same order, values allclose (atol 1e-5 plus torch's default rtol 1e-5).

    The relative term matters on the embedded model: SmolLM2 has a massive-activation channel
    (|x| ~ 100 at dim 507) where float32 batched matmuls differ by a few ulps (~2e-4 absolute,
    3e-6 relative); everywhere else the difference is below 1e-5.
    """
    assert a.keys == b.keys
    assert torch.equal(a.item_index, b.item_index) and torch.equal(a.token_index, b.token_index)
    for k in a.keys:
        assert a[k].shape == b[k].shape
        assert torch.allclose(a[k], b[k], atol=atol, rtol=1e-5), (k, float((a[k] - b[k]).abs().max()))


@pytest.mark.parametrize("positions", ["last", "all", LastK(3)])
def test_batched_equals_one_by_one_tiny(tiny, positions) -> None:
    batched = capture(tiny, TEXTS, TINY_SITES, positions=positions, batch_size=5)
    single = capture(tiny, TEXTS, TINY_SITES, positions=positions, batch_size=1)
    unsorted = capture(tiny, TEXTS, TINY_SITES, positions=positions, batch_size=2, sort_by_length=False)
    _assert_same(batched, single)
    _assert_same(batched, unsorted)
    n_tokens = [len(t.encode()) for t in TEXTS]  # byte-level tokenizer, no BOS
    if positions == "last":
        assert batched["residual.0"].shape == (5, 64) and batched.one_row_per_item
        assert batched.token_index.tolist() == [n - 1 for n in n_tokens]
    elif positions == "all":
        assert batched["heads.2"].shape == (sum(n_tokens), 64)
        assert torch.bincount(batched.item_index).tolist() == n_tokens
    else:
        assert batched["mlp_out.1"].shape == (sum(min(3, n) for n in n_tokens), 64)


def test_answer_positions_tiny(tiny) -> None:
    batched = capture(tiny, PAIRS, TINY_SITES, positions="answer", batch_size=4)
    single = capture(tiny, PAIRS, TINY_SITES, positions="answer", batch_size=1)
    _assert_same(batched, single)
    # byte tokenizer: the answer span is exactly the answer's bytes, after the prompt's bytes
    expect_items, expect_tokens = [], []
    for i, (p, a) in enumerate(PAIRS):
        expect_items += [i] * len(a.encode())
        expect_tokens += list(range(len(p.encode()), len(p.encode()) + len(a.encode())))
    assert batched.item_index.tolist() == expect_items
    assert batched.token_index.tolist() == expect_tokens


def test_answer_span_with_chat_template(tiny) -> None:
    cap = capture(tiny, [("hi", " yes")], ["residual.1"], positions="answer", chat=True)
    prompt = tiny.format_prompt("hi", chat=True)
    n_prompt = len(tiny.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert cap.token_index.tolist() == [n_prompt, n_prompt + 1, n_prompt + 2, n_prompt + 3]


def test_residual_matches_hidden_states(tiny) -> None:
    """residual.L == hidden_states[L + 1], for every token of an unpadded single run."""
    cap = capture(tiny, TEXTS, ["residual.0", "residual.2"], positions="all", batch_size=3)
    for i, text in enumerate(TEXTS):
        enc = tiny.encode(text)
        with torch.no_grad():
            hs = tiny.model(**enc, output_hidden_states=True).hidden_states
        rows = cap.item_index == i
        torch.testing.assert_close(cap["residual.0"][rows], hs[1][0], atol=1e-5, rtol=0)
        torch.testing.assert_close(cap["residual.2"][rows], hs[3][0], atol=1e-5, rtol=0)


def test_heads_site_is_o_proj_input(tiny) -> None:
    seen = {}
    o_proj = tiny.adapter.o_proj(tiny.model, 2)
    handle = o_proj.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].detach().clone()))
    try:
        enc = tiny.encode("abcdef")
        with torch.no_grad():
            tiny.model(**enc)
    finally:
        handle.remove()
    cap = capture(tiny, ["abcdef"], [Site("heads", 2, heads=(1,))], positions="all")
    torch.testing.assert_close(cap["heads.2"], seen["x"][0], atol=1e-6, rtol=0)


def test_stops_after_deepest_layer(tiny) -> None:
    calls = {"layer3": 0, "norm": 0}
    def counter(name: str):
        return lambda *args: calls.__setitem__(name, calls[name] + 1)

    h1 = tiny.adapter.layer(tiny.model, 3).register_forward_hook(counter("layer3"))
    h2 = tiny.adapter.final_norm(tiny.model).register_forward_hook(counter("norm"))
    try:
        capture(tiny, TEXTS, ["residual.1", "heads.2"], batch_size=2)
        assert calls == {"layer3": 0, "norm": 0}
        capture(tiny, TEXTS, ["residual.3"], batch_size=5)
        assert calls == {"layer3": 1, "norm": 0}
    finally:
        h1.remove()
        h2.remove()


def test_mask_positions(tiny) -> None:
    texts = ["abcd", "xy"]
    mask = Mask([[True, False, False, True], [False, True]])
    cap = capture(tiny, texts, ["residual.1"], positions=mask, batch_size=2)
    assert cap.item_index.tolist() == [0, 0, 1] and cap.token_index.tolist() == [0, 3, 1]
    full = capture(tiny, texts, ["residual.1"], positions="all", batch_size=1)
    torch.testing.assert_close(cap["residual.1"], full["residual.1"][[0, 3, 5]], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="mask for item 1 has 3 entries; the item has 2 tokens"):
        capture(tiny, texts, ["residual.1"], positions=Mask([[True] * 4, [True] * 3]))
    with pytest.raises(ValueError, match="Mask has 1 rows for 2 items"):
        capture(tiny, texts, ["residual.1"], positions=Mask([[True] * 4]))


def test_reduce_mean_is_per_item_mean(tiny) -> None:
    full = capture(tiny, PAIRS, ["residual.2"], positions="answer", batch_size=4)
    mean = capture(tiny, PAIRS, ["residual.2"], positions="answer", batch_size=2, reduce="mean")
    assert mean["residual.2"].shape == (4, 64) and mean.token_index.tolist() == [-1] * 4
    torch.testing.assert_close(mean["residual.2"], full.per_item_mean("residual.2"), atol=1e-6, rtol=0)


def test_position_specs_and_errors(tiny) -> None:
    assert parse_positions("last_4") == LastK(4) and describe_positions(LastK(2)) == "last_2"
    assert describe_positions("ALL") == "all" and describe_positions(Mask([[True]])) == "mask"
    with pytest.raises(ValueError, match="bad positions 'middle'"):
        capture(tiny, TEXTS, ["residual.0"], positions="middle")
    with pytest.raises(ValueError, match="LastK needs a positive integer"):
        LastK(0)
    with pytest.raises(ValueError, match="no items given"):
        capture(tiny, [], ["residual.0"])
    with pytest.raises(TypeError, match="not a single text"):
        capture(tiny, "abc", ["residual.0"])
    with pytest.raises(ValueError, match="item 1 is an empty string"):
        capture(tiny, ["a", ""], ["residual.0"])
    with pytest.raises(ValueError, match="needs \\(prompt, answer\\) items"):
        capture(tiny, ["a"], ["residual.0"], positions="answer")
    with pytest.raises(ValueError, match="layer 9 out of range"):
        capture(tiny, ["a"], ["residual.9"])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        capture(tiny, ["a"], ["residual.0"], batch_size=0)


def test_progress_bar(tiny, capsys) -> None:
    """The bar counts items (not batches) up to the total, under its label; nothing without progress=True."""
    capture(tiny, TEXTS, ["residual.0"], batch_size=2)
    assert capsys.readouterr() == ("", "")
    capture(tiny, TEXTS, ["residual.0"], progress=True, batch_size=2)
    out, err = capsys.readouterr()
    assert out == ""  # the bar is on stderr: piped output stays clean
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("capture ")
    assert f" {len(TEXTS)}/{len(TEXTS)} " in lines[0] and "items/s" in lines[0]


def test_results_are_plain_tensors(tiny) -> None:
    """Usable with autograd later (not inference tensors) and no grad mode left behind."""
    cap = capture(tiny, TEXTS, ["residual.1"], positions="all", batch_size=2)
    x = cap["residual.1"]
    assert not x.is_inference() and not x.requires_grad and x.dtype == torch.float32
    w = torch.zeros(64, requires_grad=True)
    (x @ w).sum().backward()
    torch.testing.assert_close(w.grad, x.sum(0))
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


@pytest.mark.slow
@pytest.mark.parametrize("positions", ["last", "all", "answer"])
def test_batched_equals_one_by_one_embedded(embedded, positions) -> None:
    texts = ["Hello there, how are you today?", "Hi", "The capital of France is"]
    items = PAIRS if positions == "answer" else texts
    sites = ["residual.2", "residual.8", "heads.3", "mlp_out.4", "attn_out.5", "heads.12"]
    batched = capture(embedded, items, sites, positions=positions, batch_size=4)
    single = capture(embedded, items, sites, positions=positions, batch_size=1)
    assert batched.keys == single.keys and torch.equal(batched.item_index, single.item_index)
    assert torch.equal(batched.token_index, single.token_index)
    for key in sites:
        # float32 sums in another order (padding changes the matmul shapes): a few ulps of each row's scale.
        # Absolute differences reach 3.4e-5 in residual.8 (whose massive-activation channel is ~100), so
        # compare per row, relative to the row's norm (measured <= 3e-7)
        rel = (batched[key] - single[key]).norm(dim=1) / single[key].norm(dim=1)
        assert float(rel.max()) < 1e-5, (key, float(rel.max()))
    assert batched["heads.3"].shape[1] == 576 and batched.n_items == len(items)


@pytest.mark.slow
def test_batched_equals_one_by_one_embedded_deep(embedded) -> None:
    """Deep residual layers carry |x| up to ~24,000 (float32 ulp ~2e-3): compare per row, relatively."""
    items = ["Hello there, how are you today?", "Hi", "The capital of France is"]
    batched = capture(embedded, items, ["residual.20"], positions="all", batch_size=3)["residual.20"]
    single = capture(embedded, items, ["residual.20"], positions="all", batch_size=1)["residual.20"]
    rel = (batched - single).norm(dim=1) / single.norm(dim=1)
    assert float(rel.max()) < 1e-5


# ---------------------------------------------------------------------------------------------
# streaming statistics


def test_moments_math() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64) * 3 + 1
    a, b = Moments(6), Moments(6)
    a.update(x[:20].float())
    b.update(x[20:].float())
    a.merge(b)
    assert a.count == 50
    torch.testing.assert_close(a.mean, x.float().double().mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(a.cov(), torch.cov(x.float().double().T), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="second moments were not accumulated"):
        Moments(3, second=False).cov()


def test_stream_stats_equal_stored(tiny) -> None:
    labels = ["a", "b", "a", "b", "a"]
    sites = ["residual.1", "heads.3"]
    stats = capture_stats(tiny, TEXTS, labels, sites, positions="all", batch_size=2)
    cap = capture(tiny, TEXTS, sites, positions="all", batch_size=5)
    row_labels = [labels[i] for i in cap.item_index.tolist()]
    for key in ("residual.1", "heads.3"):
        st = stats[key]
        assert isinstance(st, ClassStats) and sorted(st.labels) == ["a", "b"]
        for lab in ("a", "b"):
            rows = cap[key][[i for i, r in enumerate(row_labels) if r == lab]].double()
            assert st.count(lab) == rows.shape[0]
            torch.testing.assert_close(st.mean(lab), rows.mean(0), atol=1e-6, rtol=0)
            torch.testing.assert_close(st.cov(lab), torch.cov(rows.T), atol=1e-6, rtol=0)
        pooled = st.total()
        assert pooled.count == cap[key].shape[0]
        torch.testing.assert_close(pooled.mean, cap[key].double().mean(0), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="2 labels for 5 items"):
        capture_stats(tiny, TEXTS, [0, 1], sites)


def test_pair_stats_equal_stored(tiny) -> None:
    pairs = [(TEXTS[i], TEXTS[(i + 1) % 5]) for i in range(5)]
    for positions in ("last", "all"):
        ps = capture_pair_stats(tiny, pairs, ["residual.2"], positions=positions, batch_size=3)["residual.2"]
        flat = [t for p in pairs for t in p]
        reduce = "mean" if positions != "last" else "none"
        cap = capture(tiny, flat, ["residual.2"], positions=positions, reduce=reduce)
        x = cap["residual.2"].double()
        d = x[0::2] - x[1::2]
        assert ps.diff.count == 5 and ps.pos.count == 5
        torch.testing.assert_close(ps.diff.mean, d.mean(0), atol=1e-6, rtol=0)
        torch.testing.assert_close(ps.diff.second_moment(), d.T @ d / 5, atol=1e-6, rtol=0)
        torch.testing.assert_close(ps.mean_difference, x[0::2].mean(0) - x[1::2].mean(0), atol=1e-6, rtol=0)
