"""Input kernels: PSD, symmetric, unit scale; the time-series kernel against the reference `tck`."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from structalign_ros.core.learn.kernels import (
    TimeSeriesClusterKernel,
    cosine_kernel,
    frame_features,
    median_bandwidth,
    pairwise_sq_dists,
    rbf_kernel,
)


def clustered_series(
    n_per: int = 15, t: int = 20, v: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of multivariate sinusoids with noise: (N, T, V) windows and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per)
    time = np.linspace(0.0, 1.0, t)
    protos = np.stack(
        [np.stack([np.sin(2 * np.pi * (k + 1) * time + j) for j in range(v)], 1) for k in range(3)]
    )
    return protos[labels] + 0.3 * rng.standard_normal((len(labels), t, v)), labels


def assert_unit_psd(K: torch.Tensor, low: float) -> None:
    assert torch.allclose(K, K.transpose(-1, -2), atol=1e-6)
    assert torch.allclose(
        torch.diagonal(K, dim1=-2, dim2=-1), torch.ones(K.shape[:-1], dtype=K.dtype), atol=1e-6
    )
    assert K.min() >= low - 1e-6 and K.max() <= 1 + 1e-6
    assert torch.linalg.eigvalsh(K.double()).min() > -1e-6


def test_rbf_is_unit_psd_batched_and_uses_the_median():
    X = torch.randn(3, 20, 5)
    K = rbf_kernel(X)
    assert K.shape == (3, 20, 20)
    assert_unit_psd(K, 0.0)
    d2 = pairwise_sq_dists(X[1])
    ref = torch.cdist(X[1].double(), X[1].double()) ** 2
    assert torch.allclose(d2.double(), ref, atol=1e-4)
    h = median_bandwidth(d2)
    assert torch.isclose(h, d2[~torch.eye(20, dtype=torch.bool)].median())
    assert torch.allclose(K[1], torch.exp(-d2 / h), atol=1e-6)


def test_rbf_is_scale_invariant_and_safe_on_identical_samples():
    X = torch.randn(16, 4)
    assert torch.allclose(rbf_kernel(X), rbf_kernel(1000.0 * X), atol=1e-5)
    same = rbf_kernel(torch.ones(8, 4))
    assert torch.isfinite(same).all() and torch.allclose(same, torch.ones(8, 8))


def test_cosine_kernel_is_unit_psd():
    assert_unit_psd(cosine_kernel(torch.randn(2, 12, 6)), -1.0)


def test_frame_features_pools_frames_and_stacks():
    assert frame_features(torch.rand(4, 3, 64, 48), 8).shape == (4, 3 * 64)
    assert frame_features(torch.rand(4, 5, 1, 16, 16), 4).shape == (4, 5 * 16)
    flat = torch.full((2, 1, 32, 32), 0.25)
    assert torch.allclose(frame_features(flat, 4), torch.full((2, 16), 0.25))


def test_time_series_kernel_is_unit_psd_and_separates_classes():
    X, labels = clustered_series()
    tck = TimeSeriesClusterKernel(members=20, max_clusters=5).fit(torch.tensor(X))
    K = tck(torch.tensor(X, dtype=torch.float32))
    assert K.dtype == torch.float32
    assert_unit_psd(K, 0.0)
    same = torch.tensor(labels[:, None] == labels[None])
    assert K[same].mean() > 0.7 > 0.3 > K[~same].mean()


def test_time_series_kernel_is_reproducible_and_needs_fit():
    X = torch.tensor(clustered_series()[0])
    a = TimeSeriesClusterKernel(members=5, seed=3).fit(X)(X)
    b = TimeSeriesClusterKernel(members=5, seed=3).fit(X)(X)
    assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="fit"):
        TimeSeriesClusterKernel()(X)


REFERENCE = r"""
import contextlib, io, sys
import numpy as np
from tck.TCK import TCK
np.random.seed(0)
X = np.load(sys.argv[1])
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    K = TCK(G=10, C=5).fit(X).predict("tr-tr")
np.save(sys.argv[2], K)
"""


@pytest.mark.slow
def test_time_series_kernel_agrees_with_reference_tck(tmp_path):
    X, _ = clustered_series()
    np.save(tmp_path / "x.npy", X)
    # The reference forks a process pool; a separate interpreter keeps it away from this one's torch threads.
    subprocess.run(
        [sys.executable, "-c", REFERENCE, tmp_path / "x.npy", tmp_path / "k.npy"], check=True, timeout=300
    )
    ref = np.load(tmp_path / "k.npy")
    ours = TimeSeriesClusterKernel(members=40, max_clusters=5).fit(torch.tensor(X))(torch.tensor(X)).numpy()
    iu = np.triu_indices(len(X), 1)
    rho = spearmanr(ref[iu], ours[iu]).statistic
    print(f"spearman(ours, tck) = {rho:.3f}")
    assert rho > 0.4
