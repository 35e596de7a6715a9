"""Fit steering vectors from contrastive pairs: mean difference, PCA of paired differences, probes.

Conventions shared by the three methods (all return a vector ``v`` with ``pos`` minus ``neg``
orientation, so adding ``v`` pushes towards the positive side):

* ``mean_diff`` - ``mean(pos) - mean(neg)``.
* ``pca``       - the first principal direction ``u`` of the paired differences
  ``d_i = pos_i - neg_i``, *uncentered* (top eigenvector of ``E[d d^T]``, i.e. the first right
  singular vector of the difference matrix). repeng centers the differences first
  (``sklearn.PCA``), which throws away exactly the shared shift a steering vector is after when
  the differences agree; ``center=True`` gives repeng's behaviour. The sign is chosen so that
  positives project higher on average (``mean(d) . u >= 0``), and the vector is scaled to the
  mean difference's projection: ``v = (mean(d) . u) u``.
* ``probe``     - the weight vector ``w`` of an L2 logistic regression (scikit-learn) separating
  positives (1) from negatives (0), normalised, signed and scaled like ``pca``:
  ``v = (mean_diff . u) u`` with ``u = w / |w|``.

The pure functions (:func:`mean_difference`, :func:`pca_direction`, :func:`probe_direction`)
take ``(n, width)`` tensors; :func:`fit_vector` captures the activations and wraps the result
as a :class:`~steerlab.vectors.SteeringVector` with full metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .capture import (Item, Mask, PositionSpec, capture, capture_pair_stats, capture_stats,
                      describe_positions, parse_positions)
from .models import LoadedModel
from .runtime import last_token_hidden
from .sites import Site, SiteKind
from .vectors import SteeringVector, VectorMeta, library_version

__all__ = [
    "ContrastPair",
    "METHODS",
    "mean_difference",
    "pca_direction",
    "pca_from_second_moment",
    "probe_direction",
    "check_fit_options",
    "fit_vector",
]

METHODS = ("mean_diff", "pca", "probe")


@dataclass(frozen=True)
class ContrastPair:
    """A positive and a negative example.

    Without ``prompt`` both are full texts. With ``prompt`` they are two answers to it: each
    side is ``prompt + answer`` and positions refer to the answer span (``"last"``: the answer's
    last token; ``"answer"``: the mean over the answer's tokens).
    """

    positive: str
    negative: str
    prompt: str | None = None

    def items(self) -> tuple[Item, Item]:
        if self.prompt is None:
            return self.positive, self.negative
        return (self.prompt, self.positive), (self.prompt, self.negative)


def _check_pairs(pairs: Sequence[ContrastPair]) -> list[ContrastPair]:
    if isinstance(pairs, ContrastPair):
        pairs = [pairs]
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no contrast pairs given: fitting a vector needs at least one pair")
    for i, p in enumerate(pairs):
        if isinstance(p, (tuple, list)) and len(p) in (2, 3):
            p = pairs[i] = ContrastPair(*p)
        if not isinstance(p, ContrastPair):
            raise TypeError(f"pair {i} must be a ContrastPair, got {type(p).__name__}")
        for name in ("positive", "negative"):
            v = getattr(p, name)
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"pair {i} has an empty {name} text")
        if p.prompt is not None and (not isinstance(p.prompt, str) or not p.prompt.strip()):
            raise ValueError(f"pair {i} has an empty prompt (use prompt=None for plain texts)")
    return pairs


# ---------------------------------------------------------------------------------------------
# pure functions


def _as_matrix(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, width) matrix, got shape {tuple(x.shape)}")
    return x.to(torch.float64)


def mean_difference(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``mean(pos) - mean(neg)`` over rows (float64 accumulation, returns float32)."""
    p, n = _as_matrix(pos, "pos"), _as_matrix(neg, "neg")
    if p.shape[1] != n.shape[1]:
        raise ValueError(f"width mismatch: pos {p.shape[1]} vs neg {n.shape[1]}")
    return (p.mean(0) - n.mean(0)).float()


def _signed_scaled(u: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``(reference . u) u`` for unit ``u``: sign towards ``reference``, its projection as length."""
    u = u / u.norm().clamp_min(1e-30)
    return ((reference @ u) * u).float()


def pca_from_second_moment(second: torch.Tensor, mean: torch.Tensor, center: bool = False) -> torch.Tensor:
    """The PCA vector from streamed moments of paired differences.

    ``second`` is ``E[d d^T]`` (uncentered), ``mean`` is ``E[d]``. Returns
    ``(mean . u) u`` with ``u`` the top eigenvector (of the covariance when ``center``).
    """
    m = second.to(torch.float64)
    mu = mean.to(torch.float64)
    if center:
        m = m - torch.outer(mu, mu)
    m = (m + m.T) / 2
    _, vecs = torch.linalg.eigh(m)
    return _signed_scaled(vecs[:, -1], mu)


def pca_direction(diffs: torch.Tensor, center: bool = False) -> torch.Tensor:
    """First principal direction of paired differences ``(n, width)``, signed and scaled.

    Uncentered by default (see the module docstring); ``center=True`` centers the differences
    first, as repeng does. Returns ``(mean(d) . u) u``.
    """
    d = _as_matrix(diffs, "diffs")
    mu = d.mean(0)
    x = d - mu if center else d
    if x.shape[0] == 1 and center:
        raise ValueError("centered PCA needs at least two differences")
    # top right singular vector of the (n, width) matrix = top eigenvector of x^T x
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    return _signed_scaled(vh[0], mu)


def probe_direction(
    x: torch.Tensor, y: torch.Tensor | Sequence[int], c: float = 1.0, max_iter: int = 2000
) -> torch.Tensor:
    """Logistic-regression direction separating ``y == 1`` from ``y == 0`` rows of ``x``.

    Features are centered and divided by one global scale before fitting (an isotropic change:
    it speeds up the solver without tilting the direction). Returns ``(mean_diff . u) u`` with
    ``u`` the normalised weight vector.
    """
    from sklearn.linear_model import LogisticRegression

    xm = _as_matrix(x, "x")
    yt = torch.as_tensor(y).flatten().long()
    if yt.shape[0] != xm.shape[0]:
        raise ValueError(f"{yt.shape[0]} labels for {xm.shape[0]} rows")
    if set(yt.tolist()) != {0, 1}:
        raise ValueError("probe labels must contain both classes 0 and 1 (and nothing else)")
    centered = xm - xm.mean(0)
    scale = centered.pow(2).sum(1).mean().sqrt().clamp_min(1e-12)
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit((centered / scale).numpy(), yt.numpy())
    w = torch.from_numpy(clf.coef_[0]).to(torch.float64)
    md = xm[yt == 1].mean(0) - xm[yt == 0].mean(0)
    return _signed_scaled(w, md)


# ---------------------------------------------------------------------------------------------
# fitting on a model


def _layers(lm: LoadedModel, layers: int | Sequence[int]) -> list[int]:
    if isinstance(layers, int):
        layers = [layers]
    out = sorted({lm.adapter.check_layer(int(layer)) for layer in layers})
    if not out:
        raise ValueError("no layers given: pass at least one layer index")
    return out


def _reduce_for(spec: PositionSpec) -> str:
    return "none" if spec == "last" else "mean"


def _fit_stored(lm: LoadedModel, pairs: list[ContrastPair], sites: list[Site], spec: PositionSpec,
                method: str, batch_size: int, chat: bool, progress: bool) -> dict[str, torch.Tensor]:
    items: list[Item] = [side for p in pairs for side in p.items()]
    cap = capture(lm, items, sites, spec, batch_size=batch_size, chat=chat, progress=progress,
                  reduce=_reduce_for(spec))
    return {site.key: _vectors_from(cap[site], method, len(pairs)) for site in sites}


def _vectors_from(x: torch.Tensor, method: str, n_pairs: int) -> torch.Tensor:
    """A direction from stored activations ``x`` whose rows alternate positive, negative."""
    pos, neg = x[0::2], x[1::2]
    if method == "mean_diff":
        return mean_difference(pos, neg)
    if method == "pca":
        return pca_direction(pos - neg)
    return probe_direction(x, torch.tensor([1, 0] * n_pairs))


def _fit_shared(lm: LoadedModel, pairs: list[ContrastPair], sites: list[Site], method: str,
                batch_size: int) -> dict[str, torch.Tensor]:

    items = [side for p in pairs for side in p.items()]
    uniq = list(dict.fromkeys(items))
    where = {t: i for i, t in enumerate(uniq)}
    rows = torch.tensor([where[t] for t in items])
    hid = last_token_hidden(lm, uniq, [s.layer for s in sites], batch_size=batch_size)  # type: ignore[arg-type]
    return {s.key: _vectors_from(hid[s.layer][rows], method, len(pairs)) for s in sites}


def _fit_streaming(lm: LoadedModel, pairs: list[ContrastPair], sites: list[Site], spec: PositionSpec,
                   method: str, batch_size: int, chat: bool, progress: bool) -> dict[str, torch.Tensor]:
    if method == "probe":
        raise ValueError("method='probe' needs the stored activations: use streaming=False")
    if method == "mean_diff":
        items: list[Item] = [side for p in pairs for side in p.items()]
        labels = [1, 0] * len(pairs)
        stats = capture_stats(lm, items, labels, sites, spec, batch_size=batch_size, chat=chat,
                              progress=progress, reduce=_reduce_for(spec), second_moments=False)
        return {k: (s.mean(1) - s.mean(0)).float() for k, s in stats.items()}
    pstats = capture_pair_stats(lm, [p.items() for p in pairs], sites, spec, batch_size=batch_size, chat=chat,
                                progress=progress, second_moments=True)
    return {k: pca_from_second_moment(s.diff.second_moment(), s.diff.mean) for k, s in pstats.items()}


def check_fit_options(method: str, site_kind: SiteKind | str, positions: PositionSpec) -> tuple[SiteKind, PositionSpec]:
    """Validate :func:`fit_vector`'s ``method``, ``site_kind`` and ``positions`` (no model needed, so a
    caller can check them before loading one). Returns the site kind and the parsed positions."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    spec = parse_positions(positions)
    if isinstance(spec, Mask):
        raise ValueError("fit_vector does not take Mask positions; use capture() and the pure functions")
    return SiteKind(site_kind), spec


def fit_vector(
    lm: LoadedModel,
    pairs: Sequence[ContrastPair],
    layers: int | Sequence[int],
    method: str = "mean_diff",
    site_kind: SiteKind | str = "residual",
    positions: PositionSpec = "last",
    batch_size: int = 8,
    streaming: bool = False,
    chat: bool = False,
    progress: bool = False,
    share_prefix: bool = False,
) -> SteeringVector:
    """Fit a steering vector at ``site_kind`` sites of ``layers`` from contrast ``pairs``.

    ``positions``: ``"last"`` (default; the last token, i.e. the answer's last token when pairs
    have a prompt), ``LastK(k)``, ``"all"`` or ``"answer"``; multi-token positions are averaged
    per item. ``streaming=True`` keeps only running statistics (mean_diff, pca), so memory does
    not grow with the number of pairs; ``probe`` needs the stored activations.
    ``share_prefix=True`` (residual sites, ``positions="last"``, pairs with prompts, no chat
    template, not streaming) reads the activations with
    :func:`steerlab.runtime.last_token_hidden`: each distinct text once, the prefix all
    texts share and each distinct prompt run once through a KV cache. Same vectors up to float
    rounding, several times faster when prompts are long and shared (a few-shot primer).
    """
    kind, spec = check_fit_options(method, site_kind, positions)
    pairs = _check_pairs(pairs)
    if spec == "answer" and any(p.prompt is None for p in pairs):
        raise ValueError(
            "positions='answer' needs pairs with a prompt (ContrastPair(positive, negative, prompt))"
        )
    if method == "probe" and len(pairs) < 2:
        raise ValueError("method='probe' needs at least two pairs")
    sites = [Site(kind, layer) for layer in _layers(lm, layers)]
    if share_prefix:
        if streaming or chat or kind != SiteKind.RESIDUAL or spec != "last" or any(p.prompt is None for p in pairs):
            raise ValueError("share_prefix=True needs residual sites, positions='last', pairs with prompts, "
                             "chat=False and streaming=False")
        vectors = _fit_shared(lm, pairs, sites, method, batch_size)
    else:
        fitter = _fit_streaming if streaming else _fit_stored
        vectors = fitter(lm, pairs, sites, spec, method, batch_size, chat, progress)
    a = lm.adapter
    meta = VectorMeta(
        model_name=lm.name,
        architecture=a.family,
        hidden_size=a.hidden_size,
        n_layers=a.n_layers,
        heads_width=a.heads_width,
        method=method,
        positions=describe_positions(spec),
        library_version=library_version(),
        extra={
            "site_kind": kind.value,
            "n_pairs": len(pairs),
            "with_prompt": any(p.prompt is not None for p in pairs),
            "chat": chat,
            "streaming": streaming,
            "per_item": "last" if spec == "last" else "mean",
            **({"pca": "uncentered"} if method == "pca" else {}),
        },
    )
    return SteeringVector({s.key: vectors[s.key].cpu() for s in sites}, meta)
