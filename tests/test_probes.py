"""Per-head probes batched over heads: scikit-learn agreement, planted-head recovery, ITI vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerlab.probes import (HeadProbes, fit_head_probes, iti_vector, mass_mean_directions, probe_directions,
                             projection_std)
from steerlab.sites import Site

L, H, D = 2, 3, 12
PLANTED = (1, 2)


def _data(n: int = 300, seed: int = 0, signal: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, L, H, D, generator=g)
    y = (torch.rand(n, generator=g) < 0.45).long()
    x[y == 1, PLANTED[0], PLANTED[1], :3] += signal  # the planted head separates the classes
    x[:, 0, 1] *= 5.0  # badly scaled features in another head
    x[:, 1, 0] += 3.0  # and an offset in another
    return x, y


SPLIT = (torch.arange(240), torch.arange(240, 300))


def _sklearn(x: torch.Tensor, y: torch.Tensor, tr: torch.Tensor, **kw) -> list[list]:
    from sklearn.linear_model import LogisticRegression

    return [[LogisticRegression(**kw).fit(x[tr, l, h].double().numpy(), y[tr].numpy()) for h in range(H)]
            for l in range(L)]


def test_matches_sklearn_per_head() -> None:
    x, y = _data()
    tr, va = SPLIT
    probes = fit_head_probes(x, y, tr, va)
    assert isinstance(probes, HeadProbes) and probes.weights.shape == (L, H, D) and probes.biases.shape == (L, H)
    assert bool(probes.converged.all())
    p_mine = probes.predict_proba(x).double()  # (N, L, H)
    exact = _sklearn(x, y, tr, tol=1e-10, max_iter=10000)
    default = _sklearn(x, y, tr, max_iter=1000)  # the ITI reference's setting
    for l in range(L):
        for h in range(H):
            xs = x[:, l, h].double().numpy()
            p_exact = exact[l][h].predict_proba(xs)[:, 1]
            p_default = default[l][h].predict_proba(xs)[:, 1]
            # same optimum as a tightly converged scikit-learn fit
            assert np.abs(p_mine[:, l, h].numpy() - p_exact).max() < 1e-5
            # and within 1e-3 of scikit-learn's default stopping tolerance
            assert np.abs(p_mine[:, l, h].numpy() - p_default).max() < 1e-3
            assert probes.val_acc[l, h].item() == pytest.approx(exact[l][h].score(x[va, l, h].double().numpy(), y[va].numpy()))
            assert probes.train_acc[l, h].item() == pytest.approx(exact[l][h].score(xs[:240], y[:240].numpy()))
            np.testing.assert_allclose(probes.weights[l, h].numpy(), exact[l][h].coef_[0], atol=1e-4, rtol=1e-4)


def test_float32_hessian_and_dtype_options_agree() -> None:
    x, y = _data(seed=1)
    ref = fit_head_probes(x, y, *SPLIT, hess_dtype=torch.float64)
    for kw in ({}, {"dtype": torch.float32}, {"chunk_bytes": 1}):  # chunk_bytes=1: one probe per chunk
        other = fit_head_probes(x, y, *SPLIT, **kw)
        assert (other.predict_proba(x) - ref.predict_proba(x)).abs().max() < 1e-4
        assert torch.equal(other.val_acc, ref.val_acc)


def test_standardize_matches_sklearn_pipeline() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _data(seed=2)
    tr, va = SPLIT
    probes = fit_head_probes(x, y, tr, va, standardize=True, c=0.5)
    p = probes.predict_proba(x).double()
    for l, h in [(0, 1), (1, 0), PLANTED]:
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, tol=1e-10, max_iter=10000))
        pipe.fit(x[tr, l, h].double().numpy(), y[tr].numpy())
        ref = pipe.predict_proba(x[:, l, h].double().numpy())[:, 1]
        assert np.abs(p[:, l, h].numpy() - ref).max() < 1e-5


def test_recovers_planted_head() -> None:
    x, y = _data(n=400, seed=3, signal=1.5)
    probes = fit_head_probes(x, y, torch.arange(320), torch.arange(320, 400))
    assert probes.top_k(1) == [PLANTED]
    assert probes.val_acc[PLANTED].item() > 0.85
    others = probes.val_acc.flatten()[torch.arange(L * H) != PLANTED[0] * H + PLANTED[1]]
    assert others.max().item() < 0.7
    ranking = probes.ranking()
    assert len(ranking) == L * H and len(set(ranking)) == L * H
    assert probes.top_k(L * H) == ranking
    # no validation rows: rank by training accuracy
    no_val = fit_head_probes(x, y, torch.arange(320))
    assert torch.isnan(no_val.val_acc).all()
    assert no_val.top_k(1, by="train") == [PLANTED]
    with pytest.raises(ValueError, match="no validation accuracy"):
        no_val.top_k(1)


def test_predict_proba_shapes_and_accuracy() -> None:
    x, y = _data()
    probes = fit_head_probes(x, y, *SPLIT)
    one = probes.predict_proba(x[0])
    assert one.shape == (L, H)
    manual = torch.sigmoid((x[5, 1, 2] * probes.weights[1, 2]).sum() + probes.biases[1, 2])
    assert probes.predict_proba(x[5])[1, 2].item() == pytest.approx(manual.item(), abs=1e-6)
    assert torch.allclose(probes.accuracy(x[240:], y[240:]), probes.val_acc)
    with pytest.raises(ValueError, match="must end in"):
        probes.predict_proba(torch.zeros(4, L, H, D + 1))


def test_bad_inputs() -> None:
    x, y = _data()
    with pytest.raises(ValueError, match="n_examples, n_layers, n_heads, head_dim"):
        fit_head_probes(x[:, 0], y)
    with pytest.raises(ValueError, match="labels for"):
        fit_head_probes(x, y[:-1])
    with pytest.raises(ValueError, match="single class"):
        fit_head_probes(x, torch.ones_like(y))
    with pytest.raises(ValueError, match="single class"):
        fit_head_probes(x, y, torch.nonzero(y == 0).flatten())
    with pytest.raises(ValueError, match="0 or 1"):
        fit_head_probes(x, y * 2)
    with pytest.raises(ValueError, match="overlap"):
        fit_head_probes(x, y, torch.arange(200), torch.arange(150, 300))
    with pytest.raises(ValueError, match="out of range"):
        fit_head_probes(x, y, torch.arange(200), torch.tensor([300]))
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_head_probes(bad, y)
    probes = fit_head_probes(x, y, *SPLIT)
    with pytest.raises(ValueError, match="larger than the number of heads"):
        probes.top_k(L * H + 1)
    with pytest.raises(ValueError, match="positive integer"):
        probes.top_k(0)


def test_directions_and_sigma() -> None:
    x, y = _data()
    u = mass_mean_directions(x, y)
    assert u.shape == (L, H, D)
    assert torch.allclose(u.norm(dim=-1), torch.ones(L, H), atol=1e-6)
    md = x[y == 1, 1, 2].mean(0) - x[y == 0, 1, 2].mean(0)
    assert torch.allclose(u[1, 2], md / md.norm(), atol=1e-6)
    sigma = projection_std(x, u)
    ref = np.std((x[:, 0, 1].double() @ u[0, 1].double()).numpy())  # np.std: ddof 0, as ITI
    assert sigma[0, 1].item() == pytest.approx(ref, rel=1e-5)
    probes = fit_head_probes(x, y, *SPLIT)
    pu = probe_directions(probes)
    assert torch.allclose(pu.norm(dim=-1), torch.ones(L, H), atol=1e-6)
    assert (pu[PLANTED] @ u[PLANTED]).item() > 0.5  # both point towards the true class
    with pytest.raises(ValueError, match="single class"):
        mass_mean_directions(x, torch.zeros_like(y))


@pytest.mark.parametrize("direction", ["mass_mean", "probe"])
def test_iti_vector(direction: str) -> None:
    x, y = _data()
    probes = fit_head_probes(x, y, *SPLIT)
    heads = [(1, 2), (0, 1), (1, 0)]
    vec = iti_vector(x, y, heads, direction=direction, alpha=7.0, probes=probes)
    assert set(vec.vectors) == {"heads.0", "heads.1"}
    assert vec.meta.method == "iti"
    assert dict(vec.meta.heads) == {"heads.0": (1,), "heads.1": (0, 2)}
    assert vec.sites == [Site("heads", 0, (1,)), Site("heads", 1, (0, 2))]
    u = mass_mean_directions(x, y) if direction == "mass_mean" else probe_directions(probes)
    sigma = projection_std(x, u)
    for key, v in vec.vectors.items():
        layer = int(key.split(".")[1])
        assert v.shape == (H * D,)
        per_head = v.view(H, D)
        for h in range(H):
            if (layer, h) in heads:
                assert torch.allclose(per_head[h], 7.0 * sigma[layer, h] * u[layer, h], atol=1e-5)
            else:
                assert per_head[h].abs().max() == 0
    assert vec.meta.extra["direction"] == direction and vec.meta.extra["k"] == 3
    if direction == "probe":
        with pytest.raises(ValueError, match="needs fitted probes"):
            iti_vector(x, y, heads, direction="probe")


def test_iti_vector_bad_heads() -> None:
    x, y = _data()
    with pytest.raises(ValueError, match="out of range"):
        iti_vector(x, y, [(L, 0)])
    with pytest.raises(ValueError, match="duplicates"):
        iti_vector(x, y, [(0, 0), (0, 0)])
    with pytest.raises(ValueError, match="no heads"):
        iti_vector(x, y, [])
    with pytest.raises(ValueError, match="unknown direction"):
        iti_vector(x, y, [(0, 0)], direction="pca")


def test_tie_orders() -> None:
    """Heads of equal validation accuracy: "other" orders them by training accuracy, then index; "numpy"
    is ITI's reference expression np.argsort(acc)[::-1] on the flattened (layer, head) grid."""
    import numpy as np

    from steerlab.probes import HeadProbes

    g = torch.Generator().manual_seed(0)
    val = (torch.randint(0, 3, (L, H), generator=g) / 4).float()  # many ties
    train = torch.rand(L, H, generator=g)
    pr = HeadProbes(torch.zeros(L, H, 2), torch.zeros(L, H), train, val)
    flat = np.argsort(val.flatten().double().numpy())[::-1]
    assert pr.ranking(ties="numpy") == [(int(i) // H, int(i) % H) for i in flat]
    other = pr.ranking()
    keys = [(-float(val[l, h]), -float(train[l, h]), l, h) for l, h in other]
    assert keys == sorted(keys)  # accuracy, then the other accuracy, then (layer, head)
    assert pr.top_k(3, ties="numpy") == pr.ranking(ties="numpy")[:3]
    with pytest.raises(ValueError, match="^bad ties 'random': use one of other, numpy$"):
        pr.ranking(ties="random")
