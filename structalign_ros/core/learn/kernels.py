"""Input-space kernels per modality and batch: UniOMA's ``K_x^m``.

Every kernel here maps a batch of ``N`` samples to an ``(N, N)`` symmetric positive semi-definite
matrix with a unit diagonal and entries in ``[-1, 1]`` (``[0, 1]`` for RBF and the time-series kernel),
so the GW terms of different modalities are on one scale and no modality wins by its units.

- :func:`rbf_kernel` with a median-heuristic bandwidth, for camera, depth and tactile frames after
  :func:`frame_features` has pooled them to a small grid.
- :func:`cosine_kernel`, a similarity of embeddings.
- :class:`TimeSeriesClusterKernel`, in the spirit of the Time Series Cluster Kernel (Mikalsen et al.,
  Pattern Recognition 76, 2018) for F/T, IMU and joint windows: an ensemble of Gaussian mixtures,
  each fit on a random time segment and variable subset of a buffer, with the kernel the mean over the
  ensemble of the inner products of row-normalised posteriors. Fitting runs once on a buffer;
  evaluation is a few batched matmuls, cheap enough for every training step.
- :class:`InputKernels`, the per-modality choice between them for a whole batch.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from structalign_ros.core.config import GRID_KINDS
from structalign_ros.core.data.batch import Batch, to_frames

Array = TypeVar("Array", Tensor, np.ndarray)


def pairwise_sq_dists(X: Tensor) -> Tensor:
    """Squared Euclidean distances between the rows of ``X``.

    Args:
        X: ``(..., N, D)``.

    Returns:
        ``(..., N, N)``, clamped at 0 (the expansion below can go slightly negative).
    """
    sq = (X * X).sum(-1)  # (..., N)
    d2 = sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * X @ X.transpose(-1, -2)
    return d2.clamp_min(0.0)


def median_bandwidth(d2: Tensor) -> Tensor:
    """The median heuristic: the median of the off-diagonal squared distances, per batch entry.

    Args:
        d2: ``(..., N, N)`` squared distances.

    Returns:
        ``(...,)``, floored so a batch of identical samples gives an all-ones kernel, not NaN.
    """
    n = d2.shape[-1]
    off = ~torch.eye(n, dtype=torch.bool, device=d2.device)
    values = d2[..., off]  # (..., N*(N-1))
    return values.median(dim=-1).values.clamp_min(1e-12)


def rbf_kernel(X: Tensor, bandwidth: Tensor | None = None) -> Tensor:
    """Gaussian kernel ``K_ij = exp(-||x_i - x_j||^2 / h)`` with ``h`` the median heuristic.

    Args:
        X: ``(..., N, D)`` features.
        bandwidth: ``(...,)`` or scalar ``h``; default :func:`median_bandwidth` of this batch.

    Returns:
        ``(..., N, N)`` with unit diagonal and entries in ``(0, 1]``.
    """
    d2 = pairwise_sq_dists(X)
    h = median_bandwidth(d2) if bandwidth is None else torch.as_tensor(bandwidth, dtype=X.dtype)
    return torch.exp(-d2 / h.to(X.device)[..., None, None])


def cosine_kernel(X: Tensor) -> Tensor:
    """Cosine similarity ``K_ij = <x_i, x_j> / (|x_i| |x_j|)``.

    Args:
        X: ``(..., N, D)``.

    Returns:
        ``(..., N, N)``, unit diagonal, entries in ``[-1, 1]``.
    """
    Xn = F.normalize(X, dim=-1)
    return Xn @ Xn.transpose(-1, -2)


def frame_features(x: Tensor, size: int) -> Tensor:
    """Average-pool frames to ``size x size`` and flatten: the RBF kernel's input for images.

    Pooling first keeps the kernel about scene layout rather than pixel noise, and makes its cost
    independent of the camera resolution.

    Args:
        x: ``(B, C, H, W)`` frames or ``(B, T, C, H, W)`` short frame stacks (tactile).

    Returns:
        ``(B, C * size * size)`` or ``(B, T * C * size * size)``.
    """
    lead = x.shape[:-3]
    pooled = F.adaptive_avg_pool2d(x.reshape(-1, *x.shape[-3:]).float(), size)
    return pooled.reshape(lead[0], -1)


class TimeSeriesClusterKernel:
    """Ensemble-of-mixtures kernel for multivariate windows ``(N, T, V)``.

    Each member draws a time segment of length ``min_length..max_length``, a subset of
    ``min_vars..max_vars`` variables, a number of components ``2..max_clusters`` and a random subset of
    the buffer (at least ``min_fraction`` of it), then fits a diagonal Gaussian mixture by MAP-EM: the
    variances are shrunk towards the segment's overall variance (a conjugate prior with strength
    ``prior_strength`` pseudo-samples), which keeps components on a small buffer from collapsing.
    ``K = mean_q P_q P_q^T`` with ``P_q`` the row-normalised posteriors of member ``q``; each term has
    a unit diagonal and is a Gram matrix, so the mean is PSD with unit diagonal and entries in ``[0, 1]``.

    Args:
        members: ensemble size.
        max_clusters: components are drawn from ``2..max_clusters``.
        min_fraction: smallest share of the buffer a member is fit on.
        min_length, max_length: time segment lengths (clipped to ``T``; ``None`` = ``ceil(0.8 T)``).
        iterations: EM iterations per member.
        prior_strength: pseudo-samples of the variance prior.
        seed: the ensemble's random draws; fixed so a kernel is reproducible.
    """

    def __init__(
        self,
        members: int = 30,
        max_clusters: int = 6,
        min_fraction: float = 0.8,
        min_length: int = 4,
        max_length: int | None = None,
        iterations: int = 20,
        prior_strength: float = 1.0,
        seed: int = 0,
    ) -> None:
        if members < 1 or max_clusters < 2 or not 0 < min_fraction <= 1:
            raise ValueError("need members >= 1, max_clusters >= 2, 0 < min_fraction <= 1")
        self.members = members
        self.max_clusters = max_clusters
        self.min_fraction = min_fraction
        self.min_length = min_length
        self.max_length = max_length
        self.iterations = iterations
        self.prior_strength = prior_strength
        self.seed = seed
        # The fitted ensemble, padded to common sizes so a batch is scored by a few batched ops:
        # padded feature slots read a constant zero and have mean 0 and variance 1 (adding the same
        # term to every component), padded components have log weight -inf (posterior exactly 0).
        self._index: Tensor | None = None  # (Q, D) long, into the flattened window plus a zero slot
        self._log_w: Tensor | None = None  # (Q, 1, C)
        self._means: Tensor | None = None  # (Q, C, D)
        self._variances: Tensor | None = None  # (Q, C, D)
        self._loc: Tensor | None = None  # (V,)
        self._scale: Tensor | None = None  # (V,)

    @property
    def fitted(self) -> bool:
        return self._index is not None

    def fit(self, X: Tensor | np.ndarray) -> TimeSeriesClusterKernel:
        """Fit the ensemble on a buffer of windows.

        Fitting runs in numpy float64: it happens once per buffer, on many tiny arrays for which
        torch's intra-op thread pool costs more than the arithmetic.

        Args:
            X: ``(N, T, V)`` float windows, ``N >= 2 * max_clusters`` recommended.
        """
        X = X.detach().cpu().numpy() if isinstance(X, Tensor) else np.asarray(X)
        if X.ndim != 3 or X.shape[0] < 2:
            raise ValueError(f"expected (N >= 2, T, V) windows, got {X.shape}")
        X = X.astype(np.float64)
        n, t, v = X.shape
        # Per-variable standardisation: mixtures over raw units would be dominated by the largest
        # variable (forces in N next to torques in Nm).
        loc = X.mean(axis=(0, 1))
        scale = np.maximum(X.std(axis=(0, 1)), 1e-6)
        self._loc, self._scale = torch.from_numpy(loc), torch.from_numpy(scale)
        Xs = (X - loc) / scale
        rng = np.random.default_rng(self.seed)
        max_len = self.max_length or math.ceil(0.8 * t)
        lo_len, hi_len = min(self.min_length, t), min(max_len, t)
        lo_var = 1 if v == 1 else 2
        hi_var = max(lo_var, math.ceil(0.9 * v))
        fitted = []
        for _ in range(self.members):
            length = int(rng.integers(lo_len, hi_len + 1))
            t0 = int(rng.integers(0, t - length + 1))
            variables = np.sort(rng.permutation(v)[: int(rng.integers(lo_var, hi_var + 1))])
            c = int(rng.integers(2, self.max_clusters + 1))
            m = int(rng.integers(max(math.ceil(self.min_fraction * n), c), n + 1))
            rows = rng.permutation(n)[:m]
            # positions of the segment's selected variables in a window flattened to (T * V,)
            index = ((np.arange(t0, t0 + length)[:, None] * v) + variables[None, :]).reshape(-1)
            feats = Xs.reshape(n, t * v)[rows][:, index]  # (m, L*V_q)
            fitted.append((index, *self._fit_mixture(feats, c, rng)))
        self._pack(fitted, pad_index=t * v)
        return self

    def _fit_mixture(
        self, feats: np.ndarray, c: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MAP-EM for a diagonal mixture on ``(m, D)`` features -> log weights, means, variances."""
        m = feats.shape[0]
        prior_var = np.maximum(feats.var(axis=0), 1e-3)  # (D,)
        means = feats[rng.permutation(m)[:c]].copy()  # (C, D)
        variances = np.tile(prior_var, (c, 1))
        log_w = np.full(c, -math.log(c))
        a = self.prior_strength
        for _ in range(self.iterations):
            logp = _log_joint(feats, log_w, means, variances)  # (m, C)
            resp = np.exp(logp - logp.max(axis=1, keepdims=True))
            resp /= resp.sum(axis=1, keepdims=True)
            nk = resp.sum(0)  # (C,)
            means = (resp.T @ feats) / np.maximum(nk, 1e-9)[:, None]
            scatter = np.maximum(resp.T @ (feats * feats) - nk[:, None] * means * means, 0.0)  # (C, D)
            variances = np.maximum((scatter + a * prior_var) / (nk[:, None] + a), 1e-4)
            log_w = np.log((nk + 1e-3) / (m + 1e-3 * c))
        return log_w, means, variances

    def _pack(self, fitted: list[tuple[np.ndarray, ...]], pad_index: int) -> None:
        q = len(fitted)
        d = max(len(f[0]) for f in fitted)
        c = max(len(f[1]) for f in fitted)
        index = np.full((q, d), pad_index)
        log_w = np.full((q, 1, c), -np.inf)
        means = np.zeros((q, c, d))
        variances = np.ones((q, c, d))
        for i, (idx, lw, mu, var) in enumerate(fitted):
            index[i, : len(idx)] = idx
            log_w[i, 0, : len(lw)] = lw
            means[i, : mu.shape[0], : mu.shape[1]] = mu
            variances[i, : var.shape[0], : var.shape[1]] = var
        self._index = torch.from_numpy(index)
        self._log_w, self._means, self._variances = (torch.from_numpy(a) for a in (log_w, means, variances))

    def posteriors(self, X: Tensor) -> Tensor:
        """Row-normalised posteriors of every member.

        Args:
            X: ``(N, T, V)`` windows with the buffer's ``T`` and ``V``.

        Returns:
            ``(Q, N, C)`` float64, zero in the padded components.
        """
        if self._index is None:
            raise RuntimeError("TimeSeriesClusterKernel.fit must run before evaluation")
        dev = X.device
        Xs = (X.double() - self._loc.to(dev)) / self._scale.to(dev)  # (N, T, V)
        flat = F.pad(Xs.reshape(X.shape[0], -1), (0, 1))  # (N, T*V + 1), last slot = padding zero
        feats = flat[:, self._index.to(dev)].permute(1, 0, 2)  # (Q, N, D)
        logp = _log_joint(feats, self._log_w.to(dev), self._means.to(dev), self._variances.to(dev))
        return F.normalize(torch.softmax(logp, dim=-1), dim=-1)

    def __call__(self, X: Tensor) -> Tensor:
        """The kernel of a batch.

        Args:
            X: ``(N, T, V)`` windows with the buffer's ``T`` and ``V``.

        Returns:
            ``(N, N)`` in the dtype of ``X`` (float32 for integer input).
        """
        dtype = X.dtype if X.is_floating_point() else torch.float32
        P = self.posteriors(X)  # (Q, N, C)
        return (P @ P.transpose(1, 2)).mean(0).to(dtype)


def _log_joint(feats: Array, log_w: Array, means: Array, variances: Array) -> Array:
    """``log pi_c + log N(x | mu_c, diag(var_c))`` for every row and component, numpy or torch.

    Args:
        feats: ``(..., N, D)``; log_w: ``(..., 1, C)`` or ``(C,)``; means, variances: ``(..., C, D)``.

    Returns:
        ``(..., N, C)``.
    """
    inv = 1.0 / variances  # (..., C, D)
    quad = (
        (feats * feats) @ inv.swapaxes(-1, -2)
        - 2.0 * feats @ (means * inv).swapaxes(-1, -2)
        + (means * means * inv).sum(-1)[..., None, :]
    )
    log_det = (variances.log() if isinstance(variances, Tensor) else np.log(variances)).sum(-1)
    return log_w - 0.5 * (quad + log_det[..., None, :] + feats.shape[-1] * math.log(2 * math.pi))


class InputKernels:
    """UniOMA's input kernels ``K_x^m`` for every modality of a batch.

    Frames (image, depth, tactile) get :func:`rbf_kernel` on :func:`frame_features`; series (wrench,
    imu, joints) get a :class:`TimeSeriesClusterKernel` each, fitted on the first batch seen (or
    explicitly with :meth:`fit`, e.g. on a replay buffer).

    Args:
        kinds: modality name -> kind, in batch order.
        image_size: frames are pooled to this side first.
        members, max_clusters, seed: the time-series kernels' ensemble.
    """

    def __init__(
        self,
        kinds: dict[str, str],
        image_size: int = 16,
        members: int = 30,
        max_clusters: int = 6,
        seed: int = 0,
    ) -> None:
        self.kinds = dict(kinds)
        self.image_size = image_size
        self.series = {
            n: TimeSeriesClusterKernel(members, max_clusters, seed=seed + i)
            for i, (n, k) in enumerate(self.kinds.items())
            if k not in GRID_KINDS
        }

    def fit(self, batch: Batch) -> None:
        """Fit every series kernel on the windows of ``batch`` where that modality is present."""
        for name, kernel in self.series.items():
            present = batch.mask[:, batch.modalities.index(name)]
            kernel.fit(batch.inputs[name][present].flatten(2).cpu())  # (N, T, V): joints are (T, 3, J)

    @torch.no_grad()
    def __call__(self, batch: Batch, rows: Tensor) -> Tensor:
        """Kernels of the windows ``rows`` (an index or bool tensor over the batch).

        Returns:
            ``(M, n, n)`` float32 on the batch's device, modalities in batch order.
        """
        if any(not k.fitted for k in self.series.values()):
            self.fit(batch)
        out = []
        for name in batch.modalities:
            x = batch.inputs[name][rows]
            kind = self.kinds[name]
            if kind in GRID_KINDS:
                out.append(rbf_kernel(frame_features(to_frames(kind, x), self.image_size)))
            else:
                out.append(self.series[name](x.flatten(2).float()))
        return torch.stack([k.float() for k in out])


def knn_geodesic_distances(X: Tensor, k: int) -> Tensor:
    """Geodesic distances on the symmetric k-nearest-neighbour graph of each point cloud.

    The Riemannian distance on the data manifold, approximated as in Isomap: Euclidean edges to the
    ``k`` nearest neighbours, then all-pairs shortest paths (Floyd-Warshall, batched, differentiable
    through the selected edges). Pairs in different components get the largest finite distance of
    their cloud. Scaled by the mean off-diagonal distance so clouds of any spread are comparable.

    Args:
        X: ``(..., N, D)``; k: neighbours per point, ``1 <= k < N``.

    Returns:
        ``(..., N, N)`` symmetric, zero diagonal, mean off-diagonal 1.
    """
    n = X.shape[-2]
    d = (pairwise_sq_dists(X) + 1e-12).sqrt()  # (..., N, N); eps keeps the sqrt gradient finite
    eye = torch.eye(n, dtype=torch.bool, device=X.device)
    d = d.masked_fill(eye, 0.0)
    nearest = d.masked_fill(eye, float("inf")).topk(k, dim=-1, largest=False).indices  # (..., N, k)
    edge = torch.zeros_like(d, dtype=torch.bool).scatter_(-1, nearest, True)
    edge = edge | edge.transpose(-1, -2) | eye
    g = d.masked_fill(~edge, float("inf"))
    for via in range(n):
        g = torch.minimum(g, g[..., :, via : via + 1] + g[..., via : via + 1, :])
    finite = torch.isfinite(g)
    largest = g.masked_fill(~finite, 0.0).amax(dim=(-2, -1), keepdim=True)
    g = torch.where(finite, g, largest)
    off = ~eye
    return g / g[..., off].mean(-1)[..., None, None].clamp_min(1e-12)
