"""Simple end-effector pose predictors fitted on the same windows as a model, to judge it against.

A learned output is only good next to the simple alternative measured on the same data, so
``structalign eval`` and ``bench/bench_quality.py`` report these beside the model:

- ``mean``: the training targets' mean pose (position mean, the chordal mean rotation);
- ``ridge_joints``: ridge regression on :func:`models.kinematic_features` of the last joint
  positions (sin/cos of every angle and their pairwise products);
- ``mlp_joints``: a 2x128 MLP on the last joint positions;
- ``mlp_raw``: a 2x256 MLP on crude features of every modality (:func:`raw_features`: frames
  average-pooled to 4x4, series mean/last/std per variable), masked modalities as zeros plus the mask;
- ``mlp_raw_nojoints``: the same without the joint states.

Every predictor maps a :class:`Batch` to ``(N, 9)`` ``[x, y, z, r6]`` like the model's pose head,
so :func:`evaluation.pose_errors` scores them all. Fitting is deterministic (seeded) and takes
seconds on a CPU: full-batch Adam on a few thousand windows of standardised features.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structalign_ros.core.data.batch import Batch, to_frames
from structalign_ros.core.learn.models import kinematic_features, last_joint_positions
from structalign_ros.core.learn.rotations import quaternion_to_rotation_6d

BASELINES = ("mean", "ridge_joints", "mlp_joints", "mlp_raw", "mlp_raw_nojoints")
JOINT_BASELINES = ("ridge_joints", "mlp_joints", "mlp_raw")  # the ones that read the joint states


def _joint_name(kinds: Mapping[str, str]) -> str | None:
    return next((n for n, k in kinds.items() if k == "joints"), None)


def raw_features(batch: Batch, kinds: Mapping[str, str], skip: tuple[str, ...] = ()) -> Tensor:
    """Crude per-window features of every modality whose kind is not in ``skip``, plus the mask.

    Frames (camera, depth, tactile) are average-pooled to 4x4 per channel; series (wrench, IMU,
    joints) give the mean, last sample and std of each variable. A masked modality's block is zero.
    """
    blocks = []
    for m, name in enumerate(batch.modalities):
        kind = kinds[name]
        if kind in skip:
            continue
        x = batch.inputs[name]
        if kind in ("image", "depth", "tactile"):
            f = F.adaptive_avg_pool2d(to_frames(kind, x), 4).flatten(1)
        else:
            s = x.float().flatten(2)  # (N, T, V)
            f = torch.cat([s.mean(1), s[:, -1], s.std(1, unbiased=False)], dim=1)
        blocks.append(f * batch.mask[:, m : m + 1])
        blocks.append(batch.mask[:, m : m + 1].float())
    return torch.cat(blocks, dim=1)


def pose_targets(pose: Tensor) -> Tensor:
    """``(N, 7)`` ``[x, y, z, q]`` -> ``(N, 9)`` ``[x, y, z, r6]``, the space every baseline regresses."""
    return torch.cat([pose[:, :3], quaternion_to_rotation_6d(pose[:, 3:])], dim=1)


@dataclass
class _Affine:
    loc: Tensor
    scale: Tensor

    @staticmethod
    def fit(x: Tensor) -> _Affine:
        return _Affine(x.mean(0), x.std(0).clamp_min(1e-6))

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.loc) / self.scale

    def inverse(self, z: Tensor) -> Tensor:
        return z * self.scale + self.loc


def ridge_solve(x: Tensor, y: Tensor, ridge: float) -> Tensor:
    """Least squares of ``y (N, K)`` on ``[x, 1]`` (float64) with a penalty ``ridge * N`` on every
    coefficient: ``(D + 1, K)``, the intercept last."""
    X = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    eye = torch.eye(X.shape[1], dtype=X.dtype) * ridge * len(X)
    return torch.linalg.solve(X.T @ X + eye, X.T @ y.double())


def fit_ridge(x: Tensor, y: Tensor, ridge: float = 1e-6) -> Callable[[Tensor], Tensor]:
    """Ridge regression on standardised ``x`` (float64), returns the predictor."""
    x, y = x.double(), y.double()
    fx, fy = _Affine.fit(x), _Affine.fit(y)
    W = ridge_solve(fx(x), fy(y), ridge)

    def predict(xn: Tensor) -> Tensor:
        Xn = torch.cat([fx(xn.double()), torch.ones(len(xn), 1, dtype=torch.float64)], dim=1)
        return fy.inverse(Xn @ W).float()

    return predict


def fit_mlp(
    x: Tensor, y: Tensor, hidden: int, steps: int = 3000, seed: int = 0, batch: int = 512
) -> Callable[[Tensor], Tensor]:
    """A 2-hidden-layer SiLU MLP on standardised ``x`` -> standardised ``y`` (Adam, cosine decay)."""
    gen = torch.Generator().manual_seed(seed)
    fx, fy = _Affine.fit(x.float()), _Affine.fit(y.float())
    xs, ys = fx(x.float()), fy(y.float())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Linear(x.shape[1], hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, y.shape[1]),
        )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, len(xs), (min(batch, len(xs)),), generator=gen)
        loss = F.smooth_l1_loss(net(xs[idx]), ys[idx], beta=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()

    @torch.no_grad()
    def predict(xn: Tensor) -> Tensor:
        return fy.inverse(net(fx(xn.float())))

    return predict


Predict = Callable[[Batch], Tensor]


def fit_baselines(
    train: Batch, kinds: Mapping[str, str], seed: int = 0, steps: int = 3000
) -> dict[str, Predict]:
    """Fit every baseline that the modalities allow on ``train`` (which must carry ``pose``).

    Joint baselines are left out when no modality is of kind ``joints``. Returns name -> predictor.
    """
    if train.pose is None or len(train) < 2:
        raise ValueError("baselines need at least two windows with ground-truth poses")
    y = pose_targets(train.pose)
    mean = y.mean(0)
    out: dict[str, Predict] = {"mean": lambda b: mean.expand(len(b), 9).clone()}
    joints = _joint_name(kinds)
    if joints is not None:
        ridge = fit_ridge(kinematic_features(train.inputs[joints]), y)
        out["ridge_joints"] = lambda b: ridge(kinematic_features(b.inputs[joints]))
        mlp_j = fit_mlp(last_joint_positions(train.inputs[joints]), y, 128, steps, seed)
        out["mlp_joints"] = lambda b: mlp_j(last_joint_positions(b.inputs[joints]))
    mlp_raw = fit_mlp(raw_features(train, kinds), y, 256, steps, seed)
    out["mlp_raw"] = lambda b: mlp_raw(raw_features(b, kinds))
    if joints is not None:
        mlp_nj = fit_mlp(raw_features(train, kinds, ("joints",)), y, 256, steps, seed)
        out["mlp_raw_nojoints"] = lambda b: mlp_nj(raw_features(b, kinds, ("joints",)))
    return out
