"""Per-head linear probes, batched over all heads, and ITI head directions.

Head activations are the input of the attention output projection (``heads.L`` sites) viewed as
``(n_heads, head_dim)``; a dataset of them is one tensor ``X`` of shape
``(n_examples, n_layers, n_heads, head_dim)`` (e.g. the last token of every item).

:func:`fit_head_probes` fits one L2-regularised logistic regression per head, all ``L*H`` of
them at once, as one batched problem: damped Newton steps on a ``(L*H, head_dim + 1)`` parameter
tensor, with batched Cholesky solves of the ``(L*H, head_dim + 1, head_dim + 1)`` Hessians. The
objective is scikit-learn's ``LogisticRegression`` default (``penalty="l2"``, ``C=1.0``,
intercept fitted and not penalised)::

    sum_i log(1 + exp(-s_i (w . x_i + b))) + ||w||^2 / (2 C)        s_i = +-1

so the solution is the one scikit-learn converges to (the test suite checks per-head
probabilities against it). The problem is strictly convex; Newton converges in about ten steps.

Directions for ITI (Li et al. 2023): the *mass-mean* direction ``mean(true) - mean(false)`` or
the probe weight vector, unit-normalised (``u``); ``sigma`` is the standard deviation of the
activations projected on ``u``. :func:`iti_vector` turns selected heads into a
:class:`~steerlab.vectors.SteeringVector` with ``heads.L`` sites that add ``alpha * sigma * u``
on the selected heads and zero elsewhere.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_strength
from .vectors import SteeringVector, VectorMeta, library_version

if TYPE_CHECKING:  # pragma: no cover
    from .models import LoadedModel

__all__ = [
    "Head",
    "HeadProbes",
    "DIRECTIONS",
    "TIES",
    "fit_head_probes",
    "mass_mean_directions",
    "probe_directions",
    "projection_std",
    "head_directions",
    "iti_vector",
    "shift_vector",
]

Head = tuple[int, int]
DIRECTIONS = ("mass_mean", "probe")
#: how :meth:`HeadProbes.ranking` orders heads of equal accuracy
TIES = ("other", "numpy")


# ---------------------------------------------------------------------------------------------
# input checks


def _check_x(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"head activations must be a tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(
            f"head activations must be (n_examples, n_layers, n_heads, head_dim), got shape {tuple(x.shape)}"
        )
    if min(x.shape) == 0:
        raise ValueError(f"head activations are empty: shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"head activations must be floating point, got {x.dtype}")
    return x


def _check_y(y: torch.Tensor | Sequence[int], n: int) -> torch.Tensor:
    yt = torch.as_tensor(y).flatten()
    if yt.shape[0] != n:
        raise ValueError(f"{yt.shape[0]} labels for {n} examples")
    if yt.is_floating_point() and not bool(((yt == 0) | (yt == 1)).all()):
        raise ValueError("labels must be 0 or 1")
    yt = yt.long()
    bad = set(yt.unique().tolist()) - {0, 1}
    if bad:
        raise ValueError(f"labels must be 0 or 1, found {sorted(bad)}")
    return yt


def _check_idx(idx: torch.Tensor | Sequence[int] | None, n: int, name: str) -> torch.Tensor | None:
    if idx is None:
        return None
    t = torch.as_tensor(idx, dtype=torch.long).flatten()
    if t.numel() and (int(t.min()) < -n or int(t.max()) >= n):
        raise ValueError(f"{name} indices out of range for {n} examples")
    t = torch.where(t < 0, t + n, t)
    if t.unique().numel() != t.numel():
        raise ValueError(f"{name} indices contain duplicates")
    return t


def _both_classes(y: torch.Tensor, what: str) -> None:
    n1 = int(y.sum())
    if n1 == 0 or n1 == y.numel():
        only = 1 if n1 else 0
        raise ValueError(f"{what} has a single class (all labels are {only}): a probe needs both 0 and 1")


def _check_heads(heads: Sequence[Head], n_layers: int, n_heads: int) -> list[Head]:
    out: list[Head] = []
    for item in heads:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"heads must be (layer, head) pairs, got {item!r}")
        layer, head = int(item[0]), int(item[1])
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ValueError(f"head ({layer}, {head}) out of range: {n_layers} layers x {n_heads} heads")
        out.append((layer, head))
    if not out:
        raise ValueError("no heads selected")
    if len(set(out)) != len(out):
        raise ValueError("heads contain duplicates")
    return out


# ---------------------------------------------------------------------------------------------
# probes


@dataclass
class HeadProbes:
    """One logistic-regression probe per head.

    ``weights`` is ``(L, H, D)`` and ``biases`` ``(L, H)``, both in the original (unstandardised)
    activation space: ``p(y=1 | x) = sigmoid(weights[l, h] . x[l, h] + biases[l, h])``.
    ``train_acc`` / ``val_acc`` are ``(L, H)`` accuracies at threshold 0.5 (``val_acc`` is NaN
    when no validation rows were given). ``n_iter`` counts Newton steps; ``converged`` is
    ``(L, H)``.
    """

    weights: torch.Tensor
    biases: torch.Tensor
    train_acc: torch.Tensor
    val_acc: torch.Tensor
    c: float = 1.0
    standardize: bool = False
    n_iter: int = 0
    converged: torch.Tensor | None = None

    @property
    def n_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def n_heads(self) -> int:
        return self.weights.shape[1]

    @property
    def head_dim(self) -> int:
        return self.weights.shape[2]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n_layers, self.n_heads, self.head_dim)

    def ranking(self, by: str = "val", ties: str = "other") -> list[Head]:
        """All heads, best first: by validation (``"val"``) or training (``"train"``) accuracy.

        ``ties="other"`` (default) breaks ties by the other accuracy, then by ``(layer, head)`` order:
        the same on every machine. ``ties="numpy"`` is ITI's reference expression,
        ``np.argsort(acc.flatten())[::-1]``: numpy's default sort is not stable, so the order of tied
        heads depends on the numpy version and the CPU's sort kernels (the reference itself is not
        reproducible there); use it to match a reference run on the same machine.
        """
        if by not in ("val", "train"):
            raise ValueError(f"bad ranking key {by!r}: use 'val' or 'train'")
        if ties not in TIES:
            raise ValueError(f"bad ties {ties!r}: use one of {', '.join(TIES)}")
        first, second = (self.val_acc, self.train_acc) if by == "val" else (self.train_acc, self.val_acc)
        if bool(torch.isnan(first).any()):
            raise ValueError("no validation accuracy (the probes were fitted without validation rows); use by='train'")
        a = first.flatten().double()
        h = self.n_heads
        if ties == "numpy":
            flat = np.argsort(a.numpy())[::-1]
            return [(int(i) // h, int(i) % h) for i in flat]
        b = torch.nan_to_num(second.flatten().double(), nan=0.0)
        order = torch.arange(a.numel())
        order = order[torch.argsort(-b[order], stable=True)]
        order = order[torch.argsort(-a[order], stable=True)]
        return [(int(i) // h, int(i) % h) for i in order]

    def top_k(self, k: int, by: str = "val", ties: str = "other") -> list[Head]:
        """The ``k`` best heads as ``(layer, head)`` pairs, best first (see :meth:`ranking`)."""
        total = self.n_layers * self.n_heads
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if k > total:
            raise ValueError(f"k={k} is larger than the number of heads ({self.n_layers} x {self.n_heads} = {total})")
        return self.ranking(by, ties)[:k]

    def decision_function(self, x_heads: torch.Tensor) -> torch.Tensor:
        """Logits ``w . x + b`` for ``x_heads`` of shape ``(..., L, H, D)``; returns ``(..., L, H)``."""
        if x_heads.ndim < 3 or tuple(x_heads.shape[-3:]) != self.shape:
            raise ValueError(f"head activations must end in {self.shape}, got shape {tuple(x_heads.shape)}")
        w = self.weights.to(x_heads.device, torch.float32)
        b = self.biases.to(x_heads.device, torch.float32)
        return (x_heads.float() * w).sum(-1) + b

    def predict_proba(self, x_heads: torch.Tensor) -> torch.Tensor:
        """``p(y=1)`` per head for ``x_heads`` of shape ``(..., L, H, D)``; returns ``(..., L, H)``."""
        return torch.sigmoid(self.decision_function(x_heads))

    def accuracy(self, x_heads: torch.Tensor, y: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Per-head accuracy ``(L, H)`` on ``(N, L, H, D)`` activations with labels ``y``."""
        _check_x(x_heads)
        yt = _check_y(y, x_heads.shape[0]).to(x_heads.device)
        pred = self.decision_function(x_heads) > 0
        return (pred == yt[:, None, None].bool()).float().mean(0).cpu()


def _objective(z: torch.Tensor, yb: torch.Tensor, w: torch.Tensor, inv_c: float) -> torch.Tensor:
    """Per-probe penalised log-loss (sum over rows); ``z`` ``(P, N)``, ``yb`` ``(N,)`` bool, ``w`` ``(P, D)``."""
    # log(1 + exp(-s z)) = softplus(-s z) with s = +-1 (softplus is linear above 20: error < 3e-9)
    return F.softplus(torch.where(yb, -z, z)).sum(-1) + 0.5 * inv_c * (w * w).sum(-1)


def _newton(
    xa: torch.Tensor, xh: torch.Tensor, yb: torch.Tensor, inv_c: float, max_iter: int, tol: float,
    theta0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Damped Newton for ``P`` independent problems; returns w, b, converged, steps.

    ``xa`` ``(P, N, D + 1)`` holds the features with a last column of ones (so the intercept
    rides along in every product: ``theta = (w, b)``); ``xh`` is the same data in the Hessian's
    dtype (may be ``xa`` itself). Values and gradients are computed in ``xa``'s dtype; the
    Hessians (the expensive ``(P, D, N) @ (P, N, D)`` products) in ``xh``'s. ``theta0``
    ``(P, D + 1)`` is an optional starting point (default zeros). An inexact Hessian changes only how
    fast the iteration converges, not where: the fixed point is set by the exact gradient.
    Convergence: the infinity norm of each probe's gradient divided by ``N`` (the scale of
    scikit-learn's ``tol``) below ``tol``. Converged probes are frozen; the working set is
    compacted once fewer than half of its probes are still moving, so that the per-step cost
    follows the unconverged probes without copying the data at every step.
    """
    p_all, n, d = xa.shape
    d -= 1
    dt, dev, hess_dtype = xa.dtype, xa.device, xh.dtype
    yf = yb.to(dt)
    ids = torch.arange(p_all, device=dev)  # global index of each working row
    theta_out = torch.zeros(p_all, d + 1, dtype=dt, device=dev)
    converged = torch.zeros(p_all, dtype=torch.bool, device=dev)
    theta = torch.zeros(p_all, d + 1, dtype=dt, device=dev) if theta0 is None else theta0.to(dev, dt).clone()
    reg = torch.full((d + 1,), inv_c, dtype=dt, device=dev)
    reg[-1] = 0.0  # the intercept is not penalised
    reg_mat = torch.diag(reg)
    z = torch.zeros(p_all, n, dtype=dt, device=dev) if theta0 is None else torch.bmm(xa, theta[:, :, None]).squeeze(-1)
    f = _objective(z, yb, theta[:, :d], inv_c)
    moving = torch.ones(p_all, dtype=torch.bool, device=dev)
    steps = 0
    for it in range(max_iter + 1):
        prob = torch.sigmoid(z)
        r = prob - yf  # (A, N)
        g = torch.bmm(r[:, None, :], xa).squeeze(1) + reg * theta  # (A, D+1)
        done = moving & (g.abs().amax(-1) / n < tol)
        moving &= ~done
        converged[ids[done]] = True
        if it == max_iter or not bool(moving.any()):
            break
        if int(moving.sum()) * 2 <= moving.numel():  # compact the working set
            theta_out[ids[~moving]] = theta[~moving]
            keep = moving.nonzero().flatten()
            same = xh is xa
            xa, theta, z, f, g, prob, ids = xa[keep], theta[keep], z[keep], f[keep], g[keep], prob[keep], ids[keep]
            xh = xa if same else xh[keep]
            moving = moving[keep]
        s = (prob * (1 - prob)).to(hess_dtype)  # (A, N)
        hess = torch.bmm((xh * s[:, :, None]).transpose(1, 2), xh).to(dt) + reg_mat
        chol, info = torch.linalg.cholesky_ex(hess)
        if bool((info != 0).any()):  # numerically indefinite: add a small ridge and retry
            bad = info != 0
            ridge = 1e-6 * hess.diagonal(dim1=-2, dim2=-1).abs().amax(-1) + 1e-10
            hess[bad] += ridge[bad, None, None] * torch.eye(d + 1, dtype=dt, device=dev)
            chol, _ = torch.linalg.cholesky_ex(hess)
        step = -torch.cholesky_solve(g[:, :, None], chol).squeeze(-1)  # (A, D+1)
        step[~moving] = 0.0  # frozen (converged) rows stay where they are
        dz = torch.bmm(xa, step[:, :, None]).squeeze(-1)  # (A, N): z moves linearly with t
        # backtracking (Armijo) line search, per probe
        slope = (g * step).sum(-1)  # < 0
        slack = 16 * torch.finfo(dt).eps * f.abs()  # rounding noise of the summed loss
        t = torch.ones(theta.shape[0], dtype=dt, device=dev)
        z_full = z + dz
        f_new = _objective(z_full, yb, theta[:, :d] + step[:, :d], inv_c)  # full steps first
        pending = moving & (f_new > f + 1e-4 * slope + slack)
        damped = bool(pending.any())
        for _ in range(40):
            if not bool(pending.any()):
                break
            idx = pending.nonzero().flatten()
            t[idx] *= 0.5
            cand = theta[idx, :d] + t[idx, None] * step[idx, :d]
            fc = _objective(z[idx] + t[idx, None] * dz[idx], yb, cand, inv_c)
            ok = fc <= f[idx] + 1e-4 * t[idx] * slope[idx] + slack[idx]
            f_new[idx[ok]] = fc[ok]
            pending[idx[ok]] = False
        if bool(pending.any()):  # no decrease found: at the optimum up to rounding, stop there
            t[pending] = 0.0
            f_new[pending] = f[pending]
            converged[ids[pending]] = True
            moving &= ~pending
        theta = theta + t[:, None] * step
        z = z + t[:, None] * dz if damped else z_full
        f = f_new
        steps = it + 1
    theta_out[ids] = theta
    return theta_out[:, :d], theta_out[:, d], converged, steps


def fit_head_probes(
    x: torch.Tensor,
    y: torch.Tensor | Sequence[int],
    train_idx: torch.Tensor | Sequence[int] | None = None,
    val_idx: torch.Tensor | Sequence[int] | None = None,
    *,
    c: float = 1.0,
    standardize: bool = False,
    max_iter: int = 50,
    tol: float | None = None,
    dtype: torch.dtype = torch.float64,
    hess_dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    chunk_bytes: int | None = None,
) -> HeadProbes:
    """Fit a logistic-regression probe for every head of ``x`` ``(N, L, H, D)``, all at once.

    ``y`` holds 0/1 labels. ``train_idx`` (default: every row) selects the fitting rows and
    ``val_idx`` (optional) the validation rows. ``c`` is scikit-learn's inverse regularisation
    strength (default 1.0, as in ``LogisticRegression()``). ``standardize=True`` z-scores each
    head's features with training statistics before fitting (the penalty then applies to the
    standardised weights, as in a ``StandardScaler`` + ``LogisticRegression`` pipeline); the
    returned weights are always in the original space.

    ``dtype`` of values and gradients (float64 by default: the fixed point matches
    scikit-learn's to ~1e-7 in probability) and ``hess_dtype`` of the Hessian products (float32:
    an inexact Hessian changes only the convergence speed, not the solution); ``device``
    (default: ``x``'s). Probes are processed in chunks of about ``chunk_bytes`` of
    activations each (default 8 MiB on a CPU, so that a chunk's Newton steps run from cache,
    about twice as fast as one big chunk; 1 GiB on an accelerator), so memory stays bounded
    for large ``N``. ``tol`` is the
    per-probe gradient tolerance on the mean-scaled objective (default 1e-8 in float64, 1e-5 in
    float32).
    """
    x = _check_x(x)
    n, n_layers, n_heads, d = x.shape
    yt = _check_y(y, n)
    tr = _check_idx(train_idx, n, "train")
    va = _check_idx(val_idx, n, "validation")
    if tr is None:
        tr = torch.arange(n)
    if tr.numel() == 0:
        raise ValueError("no training rows")
    if va is not None and va.numel() and bool(torch.isin(va, tr).any()):
        raise ValueError("train and validation indices overlap")
    if not c > 0 or not math.isfinite(c):
        raise ValueError(f"c must be a positive finite number, got {c}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    for name, dt in (("dtype", dtype), ("hess_dtype", hess_dtype)):
        if dt not in (torch.float32, torch.float64):
            raise ValueError(f"{name} must be torch.float32 or torch.float64, got {dt}")
    _both_classes(yt[tr], "the training split")
    if tol is None:
        tol = 1e-8 if dtype == torch.float64 else 1e-5
    dev = torch.device(device) if device is not None else x.device
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError("head activations contain NaN or infinite values")

    p_all = n_layers * n_heads
    flat = x.reshape(n, p_all, d)
    y_tr = yt[tr].to(dev).bool()
    y_va = yt[va].to(dev).bool() if va is not None and va.numel() else None
    weights = torch.empty(p_all, d, dtype=torch.float64)
    biases = torch.empty(p_all, dtype=torch.float64)
    conv = torch.empty(p_all, dtype=torch.bool)
    train_acc = torch.empty(p_all)
    val_acc = torch.full((p_all,), float("nan"))
    if chunk_bytes is None:
        chunk_bytes = 8 * 2**20 if dev.type == "cpu" else 2**30
    itemsize = torch.finfo(dtype).bits // 8
    per_probe = max(tr.numel() * (d + 1) * (itemsize + 8), 1)  # data, Hessian copy, weighted copy
    chunk = max(1, min(p_all, chunk_bytes // per_probe))
    n_iter = 0
    for p0 in range(0, p_all, chunk):
        p1 = min(p_all, p0 + chunk)
        xa = torch.empty(p1 - p0, tr.numel(), d + 1, dtype=dtype, device=dev)  # (P, Ntr, D + 1)
        xa[:, :, :d].copy_(flat[tr, p0:p1].to(dev).permute(1, 0, 2))
        xa[:, :, d] = 1.0
        if standardize:
            feats = xa[:, :, :d]
            mu = feats.mean(1, keepdim=True)
            sd = feats.std(1, unbiased=False, keepdim=True)
            sd = torch.where(sd > 0, sd, torch.ones_like(sd))
            feats.sub_(mu).div_(sd)
        xh = xa if hess_dtype == dtype else xa.to(hess_dtype)
        w, b, ok, steps = _newton(xa, xh, y_tr, 1.0 / c, max_iter, tol)
        train_acc[p0:p1] = _accuracy(xa[:, :, :d], y_tr, w, b)
        del xa, xh
        if standardize:
            w = w / sd.squeeze(1)
            b = b - (w * mu.squeeze(1)).sum(-1)
        if y_va is not None:
            xv = flat[va, p0:p1].to(dev, dtype).permute(1, 0, 2)
            val_acc[p0:p1] = _accuracy(xv, y_va, w, b)
        weights[p0:p1] = w.double().cpu()
        biases[p0:p1] = b.double().cpu()
        conv[p0:p1] = ok.cpu()
        n_iter = max(n_iter, steps)
    if not bool(conv.all()):
        warnings.warn(
            f"{int((~conv).sum())} of {p_all} head probes did not converge in {max_iter} Newton steps "
            f"(tol {tol:g}); raise max_iter or standardize=True",
            RuntimeWarning,
            stacklevel=2,
        )
    return HeadProbes(
        weights=weights.float().view(n_layers, n_heads, d),
        biases=biases.float().view(n_layers, n_heads),
        train_acc=train_acc.view(n_layers, n_heads),
        val_acc=val_acc.view(n_layers, n_heads),
        c=float(c),
        standardize=standardize,
        n_iter=n_iter,
        converged=conv.view(n_layers, n_heads),
    )


def _accuracy(xc: torch.Tensor, yb: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Accuracy per probe for ``xc`` ``(P, N, D)`` (threshold 0.5, i.e. logit > 0)."""
    z = torch.bmm(xc, w[:, :, None].to(xc.dtype)).squeeze(-1) + b[:, None].to(xc.dtype)
    return ((z > 0) == yb).to(torch.float64).mean(-1).float().cpu()


# ---------------------------------------------------------------------------------------------
# directions and scales


def _rows(x: torch.Tensor, idx: torch.Tensor | Sequence[int] | None) -> torch.Tensor:
    t = _check_idx(idx, x.shape[0], "row")
    if t is None:
        return x
    if t.numel() == 0:
        raise ValueError("no rows selected")
    return x[t]


def _unit(v: torch.Tensor) -> torch.Tensor:
    norm = v.norm(dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        raise ValueError("a head direction is zero (identical class means or a zero probe): cannot normalise it")
    return v / norm


def mass_mean_directions(
    x: torch.Tensor, y: torch.Tensor | Sequence[int], idx: torch.Tensor | Sequence[int] | None = None
) -> torch.Tensor:
    """Unit ``mean(x | y=1) - mean(x | y=0)`` per head: ``(L, H, D)`` float32 (``idx``: rows used)."""
    x = _check_x(x)
    yt = _check_y(y, x.shape[0])
    t = _check_idx(idx, x.shape[0], "row")
    if t is not None:
        x, yt = _rows(x, t), yt[t]
    _both_classes(yt, "the rows used for the mass-mean direction")
    pos = yt.bool().to(x.device)
    diff = x[pos].double().mean(0) - x[~pos].double().mean(0)
    return _unit(diff).float().cpu()


def probe_directions(probes: HeadProbes) -> torch.Tensor:
    """Unit probe weight vectors per head: ``(L, H, D)`` float32 (pointing towards ``y=1``)."""
    return _unit(probes.weights.double()).float()


def projection_std(
    x: torch.Tensor, directions: torch.Tensor, idx: torch.Tensor | Sequence[int] | None = None
) -> torch.Tensor:
    """``sigma[l, h]``: std (ddof 0, as ITI's ``np.std``) of ``x[:, l, h] . directions[l, h]``."""
    x = _check_x(x)
    if tuple(directions.shape) != tuple(x.shape[1:]):
        raise ValueError(f"directions shape {tuple(directions.shape)} does not match activations {tuple(x.shape[1:])}")
    x = _rows(x, idx)
    proj = (x.double() * directions.to(x.device, torch.float64)).sum(-1)  # (N, L, H)
    return proj.std(0, unbiased=False).float().cpu()


def head_directions(
    x: torch.Tensor | None,
    y: torch.Tensor | Sequence[int] | None,
    direction: str = "mass_mean",
    probes: HeadProbes | None = None,
    idx: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
    """Unit ITI directions ``(L, H, D)``: ``"mass_mean"`` (from ``x``, ``y``) or ``"probe"`` (from ``probes``)."""
    if direction == "mass_mean":
        if x is None or y is None:
            raise ValueError("direction='mass_mean' needs activations and labels")
        return mass_mean_directions(x, y, idx)
    if direction == "probe":
        if probes is None:
            raise ValueError("direction='probe' needs fitted probes (probes=...)")
        return probe_directions(probes)
    raise ValueError(f"unknown direction {direction!r}: use one of {', '.join(DIRECTIONS)}")


def iti_vector(
    x: torch.Tensor,
    y: torch.Tensor | Sequence[int],
    heads: Sequence[Head],
    *,
    direction: str = "mass_mean",
    alpha: float = 15.0,
    probes: HeadProbes | None = None,
    idx: torch.Tensor | Sequence[int] | None = None,
    sigma_idx: torch.Tensor | Sequence[int] | None = None,
    lm: "LoadedModel | None" = None,
    extra: Mapping[str, Any] | None = None,
    sigma: torch.Tensor | None = None,
) -> SteeringVector:
    """An ITI steering vector: ``alpha * sigma[l,h] * u[l,h]`` on each selected head, zero elsewhere.

    ``x`` ``(N, L, H, D)`` and ``y`` are the probing activations and labels; ``heads`` the
    selected ``(layer, head)`` pairs (e.g. ``probes.top_k(48)``). ``direction`` is
    ``"mass_mean"`` (``mean(true) - mean(false)`` over rows ``idx``, default all) or ``"probe"``
    (the probe weights; needs ``probes``). ``sigma`` is the std of ``x`` projected on ``u`` over
    rows ``sigma_idx`` (default: all rows), unless ``sigma`` ``(L, H)`` is given (e.g. ITI's own: the std over
    separate "Q: q A: a Q: q'" prompts, :func:`steerlab.interventions.iti.fit_iti`'s ``sigma_texts``). The
    vector has one ``heads.L`` site per layer
    with a selected head (width ``H*D``); ``meta.heads`` lists the heads per site and
    ``meta.method`` is ``"iti"``. Model fields of the metadata come from ``lm`` when given.
    """
    x = _check_x(x)
    n, n_layers, n_heads, d = x.shape
    yt = _check_y(y, n)
    sel = _check_heads(heads, n_layers, n_heads)
    alpha = check_strength(alpha, "alpha")
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}: use one of {', '.join(DIRECTIONS)}")
    if probes is not None and probes.shape != (n_layers, n_heads, d):
        raise ValueError(f"probes shape {probes.shape} does not match activations {(n_layers, n_heads, d)}")
    if lm is not None:
        a = lm.adapter
        if (a.n_layers, a.n_heads, a.head_dim) != (n_layers, n_heads, d):
            raise ValueError(
                f"activations are {n_layers} x {n_heads} x {d} but model '{lm.name}' has "
                f"{a.n_layers} layers x {a.n_heads} heads x {a.head_dim} dims"
            )
    u = head_directions(x, yt, direction, probes, idx)
    if sigma is None:
        sigma = projection_std(x, u, sigma_idx)
    elif tuple(sigma.shape) != (n_layers, n_heads):
        raise ValueError(f"sigma has shape {tuple(sigma.shape)}; expected {(n_layers, n_heads)}")
    return shift_vector(u, sigma, sel, alpha, lm=lm, extra={"direction": direction, "n_examples": n,
                                                            **dict(extra or {})})


def shift_vector(
    u: torch.Tensor,
    sigma: torch.Tensor,
    heads: Sequence[Head],
    alpha: float,
    *,
    lm: "LoadedModel | None" = None,
    extra: Mapping[str, Any] | None = None,
) -> SteeringVector:
    """``alpha * sigma[l,h] * u[l,h]`` on each of ``heads``, zero elsewhere: one ``heads.L`` site (width
    ``H*D``) per layer with a selected head. ``u`` ``(L, H, D)`` unit directions, ``sigma`` ``(L, H)``."""
    n_layers, n_heads, d = u.shape
    sel = _check_heads(heads, n_layers, n_heads)
    alpha = check_strength(alpha, "alpha")
    if tuple(sigma.shape) != (n_layers, n_heads):
        raise ValueError(f"sigma has shape {tuple(sigma.shape)}; expected {(n_layers, n_heads)}")
    by_layer: dict[int, list[int]] = {}
    for layer, head in sel:
        by_layer.setdefault(layer, []).append(head)
    vectors: dict[str, torch.Tensor] = {}
    meta_heads: dict[str, tuple[int, ...]] = {}
    for layer in sorted(by_layer):
        v = torch.zeros(n_heads, d)
        for head in by_layer[layer]:
            v[head] = float(alpha) * sigma[layer, head] * u[layer, head]
        key = f"heads.{layer}"
        vectors[key] = v.flatten()
        meta_heads[key] = tuple(sorted(by_layer[layer]))
    info: dict[str, Any] = {
        "alpha": float(alpha),
        "k": len(sel),
        "selected_heads": [[layer, head] for layer, head in sel],
        "sigma": [float(sigma[layer, head]) for layer, head in sel],
        **dict(extra or {}),
    }
    if lm is not None:
        a = lm.adapter
        meta = VectorMeta(model_name=lm.name, architecture=a.family, hidden_size=a.hidden_size, n_layers=a.n_layers,
                          heads_width=a.heads_width, method="iti", positions="last",
                          library_version=library_version(), heads=meta_heads, extra=info)
    else:
        meta = VectorMeta(n_layers=n_layers, heads_width=n_heads * d, method="iti", positions="last",
                          heads=meta_heads, extra=info)
    return SteeringVector(vectors, meta)
