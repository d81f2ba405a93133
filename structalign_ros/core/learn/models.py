"""Per-modality encoders, the lambda-weighted fusion and the end-effector pose head.

Every encoder maps its modality's batch layout (see :mod:`structalign_ros.core.data.batch`) to a unit
vector in a shared ``R^d``. The modality weights are ``lambda = softmax(logits)``, renormalised per
sample over the modalities present (a missing modality gets weight exactly 0 and does not dilute
the others). The fused embedding is the normalised lambda-weighted sum. The pose head is a product
of per-modality experts (``[x, y, z]`` plus the 6D rotation, with variances), fused by precision
times lambda (:class:`PoseHead`).

Sizes are chosen for the live node: 30 Hz on 2 CPU cores with six modalities, and exportable to ONNX
(only convolutions, GRU, linear layers and elementwise ops).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structalign_ros.core.config import GRID_KINDS, MODALITY_KINDS, ModelConfig
from structalign_ros.core.data.batch import Batch, ModalitySpec, to_frames
from structalign_ros.core.learn.rotations import matrix_to_rotation_6d, rotation_6d_to_matrix


class ModelOutput(NamedTuple):
    """What the model produces per batch (and what the predictor returns).

    Attributes:
        embeddings: ``(B, M, d)`` unit vectors, modality axis in ``Batch.modalities`` order.
        fused: ``(B, d)`` unit vector.
        weights: ``(B, M)`` lambda renormalised over the present modalities (rows sum to 1, or 0 when
            nothing is present).
        pose: ``(B, 9)`` ``[x, y, z, r6]``; see :func:`rotations.rotation_6d_to_matrix`.
        pose_experts: ``(B, M, 13)`` each modality's own pose estimate and log-variances
            (:class:`PoseHead`); zeros without a pose head.
    """

    embeddings: Tensor
    fused: Tensor
    weights: Tensor
    pose: Tensor
    pose_experts: Tensor


class Standardize(nn.Module):
    """Fixed per-channel affine normalisation, fitted once on data (:meth:`MultimodalModel.fit_input_stats`).

    Fitted statistics rather than batch norm: inference on a single window and online fine-tuning
    must see the same normalisation, and the statistics travel inside the checkpoint and the ONNX file.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(channels))
        self.register_buffer("scale", torch.ones(channels))

    def fit(self, x: Tensor) -> None:
        """Set the statistics from ``x`` ``(N, C, ...)``, channel axis 1."""
        dims = [d for d in range(x.dim()) if d != 1]
        self.loc.copy_(x.float().mean(dims))
        self.scale.copy_(x.float().std(dims).clamp_min(1e-3))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.loc.view(shape)) / self.scale.view(shape)


def _conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(min(8, cout), cout), nn.SiLU())


class FrameEncoder(nn.Module):
    """CNN for camera, depth and tactile frames.

    Camera and depth frames are resized to ``image_size`` and downsampled by three stride-2 stages;
    tactile grids are small, so they keep their resolution (stride 1) and their time axis becomes
    channels.
    """

    def __init__(self, spec: ModalitySpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = spec.kind
        if spec.kind == "image":
            channels, frame = spec.shape[-1], spec.shape[1:3]  # (1, H, W, 3)
        elif spec.kind == "depth":
            channels, frame = 1, spec.shape[1:3]  # (1, H, W)
        else:
            channels, frame = spec.shape[0], (cfg.image_size,) * 2  # (T, H, W), kept as it is
        self.size = cfg.image_size
        # decided here, not per call: a data-dependent branch would be frozen into the ONNX graph
        self.resize = tuple(frame) != (cfg.image_size, cfg.image_size)
        self.norm = Standardize(channels)
        w = cfg.width
        stride = 1 if spec.kind == "tactile" else 2
        self.trunk = nn.Sequential(_conv_block(channels, w, stride), _conv_block(w, 2 * w, stride))
        self.trunk.append(_conv_block(2 * w, 2 * w, stride))
        self.proj = nn.Linear(2 * w, cfg.embed_dim)

    def frames(self, x: Tensor) -> Tensor:
        """The batch layout -> ``(B, C, H, W)`` float, before standardisation."""
        x = to_frames(self.kind, x)
        if self.resize:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x

    def forward(self, x: Tensor) -> Tensor:
        h = self.trunk(self.norm(self.frames(x)))  # (B, 2w, h, w)
        return self.proj(h.mean((-2, -1)))  # (B, d)


class SeriesEncoder(nn.Module):
    """Temporal convolution or GRU over F/T, IMU and joint windows ``(B, T, ...)``.

    Everything after the time axis is one vector of variables per step: a joint window
    ``(B, T, 3, J)`` (position, velocity, effort of J joints) is read as ``(B, T, 3J)``.
    """

    def __init__(self, spec: ModalitySpec, cfg: ModelConfig) -> None:
        super().__init__()
        variables = math.prod(spec.shape[1:])
        w = cfg.width
        self.norm = Standardize(variables)
        self.temporal = cfg.temporal
        if cfg.temporal == "conv":
            self.trunk = nn.Sequential(
                nn.Conv1d(variables, w, 5, 1, 2),
                nn.SiLU(),
                nn.Conv1d(w, 2 * w, 5, 2, 2),
                nn.SiLU(),
                nn.Conv1d(2 * w, 2 * w, 3, 1, 1),
                nn.SiLU(),
            )
        else:
            self.trunk = nn.GRU(variables, 2 * w, batch_first=True)
        # The pooled trunk summarises the window; the last sample, standardised, goes to the projection
        # as it is, so the feature (and the pose expert reading it) sees the state at the window's
        # stamp, which pooling over the window would blur.
        self.proj = nn.Linear(2 * w + variables, cfg.embed_dim)

    def frames(self, x: Tensor) -> Tensor:
        """``(B, T, ...)`` -> ``(B, V, T)`` float: channels first for the standardisation."""
        return x.float().flatten(2).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(self.frames(x))  # (B, V, T)
        if self.temporal == "conv":
            feat = self.trunk(h).mean(-1)  # (B, 2w)
        else:
            seq = h.transpose(1, 2)  # (B, T, V)
            # an explicit h0 sized from the input keeps the batch axis dynamic in the ONNX graph
            h0 = seq.new_zeros(1, seq.shape[0], self.trunk.hidden_size)
            feat = self.trunk(seq, h0)[1][0]  # last hidden state (B, 2w)
        return self.proj(torch.cat([feat, h[:, :, -1]], dim=1))


def masked_weights(logits: Tensor, mask: Tensor) -> Tensor:
    """lambda = softmax(logits) renormalised over the present modalities.

    Args:
        logits: ``(M,)``; mask: ``(B, M)`` bool.

    Returns:
        ``(B, M)``, zero where masked; rows with nothing present are all zero (not NaN).
    """
    w = torch.softmax(logits, dim=0).unsqueeze(0) * mask.to(logits.dtype)  # (B, M)
    return w / w.sum(1, keepdim=True).clamp_min(1e-12)


# One pose expert's output per modality: [mu (3), log-variance (3), r6 (6), log-variance of rotation (1)].
EXPERT_OUTPUTS = 13


def last_joint_positions(x: Tensor) -> Tensor:
    """The positions of a joint window's last sample: ``(B, T, 3, J)`` (or ``(B, T, J)``) -> ``(B, J)``."""
    return x.float()[:, -1, 0, :] if x.dim() == 4 else x.float()[:, -1, :]


def kinematic_features(x: Tensor) -> Tensor:
    """A joint window's last positions as sin, cos and every pairwise product of those.

    ``(B, T, 3, J)`` (or ``(B, T, J)``) -> ``(B, K)``, ``K = 2J + 2J(2J + 1) / 2``. Forward kinematics of
    revolute joints is a sum of products of these, so the end-effector pose is close to linear in
    them; they carry none of the window's velocities, efforts or history, which an expert could only
    overfit to (measured on held-out episodes: see docs/LEARNING.md).
    """
    q = last_joint_positions(x)
    t = torch.cat([q.sin(), q.cos()], dim=1)
    n = t.shape[1]
    # index lists built in Python, not torch.triu_indices: they become constants of the ONNX graph
    i = torch.tensor([a for a in range(n) for _ in range(a, n)], device=t.device)
    j = torch.tensor([b for a in range(n) for b in range(a, n)], device=t.device)
    return torch.cat([t, t[:, i] * t[:, j]], dim=1)


def kinematic_size(joints: int) -> int:
    """Length of :func:`kinematic_features` for ``joints`` joints."""
    return 2 * joints + joints * (2 * joints + 1)


# The mean outputs of an expert, [mu (3), r6 (6)], at these positions of EXPERT_OUTPUTS.
MEAN_OUTPUTS = (0, 1, 2, 6, 7, 8, 9, 10, 11)


class PoseExpert(nn.Module):
    """One modality's pose expert: a linear map to the mean outputs plus a 2-hidden-layer MLP for all
    of them (the mean's nonlinear part and the log-variances).

    The linear part is solved in closed form before the refit (:func:`core.learn.headfit.fit_linear_parts`):
    for the joint states' kinematic features it is already most of forward kinematics, which SGD on
    an MLP alone approaches slowly (measured on a test episode: the refit model without it reached
    2.0 mm, with it 0.47 mm; ridge regression on the same features 0.40 mm).
    """

    def __init__(self, cin: int, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(cin, len(MEAN_OUTPUTS))
        self.mlp = nn.Sequential(
            nn.Linear(cin, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, EXPERT_OUTPUTS),
        )
        self.register_buffer("scatter", torch.zeros(len(MEAN_OUTPUTS), EXPERT_OUTPUTS))
        self.scatter[torch.arange(len(MEAN_OUTPUTS)), torch.tensor(MEAN_OUTPUTS)] = 1.0

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x) + self.linear(x) @ self.scatter


class PoseHead(nn.Module):
    """End-effector pose as a product of per-modality experts, weighted by lambda.

    Each modality has its own expert, an MLP that predicts the pose from that modality alone and how
    uncertain it is: a position mean and per-axis log-variance (in units of the training targets'
    per-axis spread, :attr:`position`), and a 6D rotation with one log-variance. The joint states'
    expert reads :func:`kinematic_features`; every other expert reads its encoder's feature before
    unit normalisation. The fused pose is the precision-weighted mean of the present experts, each
    precision multiplied by the modality's weight ``lambda_m`` (renormalised over the present
    modalities, times ``M`` so uniform weights leave it as it is) and divided by :attr:`calibration`,
    the ratio of each expert's squared error on held-out episodes to its predicted variance (median
    over windows; fitted by :func:`core.learn.headfit.calibrate`). So a missing sensor drops out exactly,
    a sensor whose lambda falls stops pulling the pose, and an expert that was overconfident on the
    training episodes is discounted by what it did on held-out ones.
    """

    def __init__(self, specs: Mapping[str, ModalitySpec], cfg: ModelConfig) -> None:
        super().__init__()
        self.kinematic = tuple(s.kind == "joints" for s in specs.values())
        dims = [
            kinematic_size(s.shape[-1]) if k else cfg.embed_dim
            for s, k in zip(specs.values(), self.kinematic, strict=True)
        ]
        self.inputs = nn.ModuleList([Standardize(d) for d in dims])
        self.experts = nn.ModuleList([PoseExpert(d, cfg.pose_hidden) for d in dims])
        self.position = Standardize(3)
        self.register_buffer("calibration", torch.ones(len(dims), 2))  # (M, [position, rotation])

    def expert_input(self, m: int, x: Tensor, feature: Tensor) -> Tensor:
        """What expert ``m`` reads, before its standardisation, from its modality's input ``x`` and
        encoder feature ``(B, d)``: ``(B, D_m)``."""
        return kinematic_features(x) if self.kinematic[m] else feature

    def expert_inputs(self, inputs: Sequence[Tensor], features: Tensor) -> list[Tensor]:
        """Every expert's input, ``inputs`` in the model's modality order: ``M`` tensors ``(B, D_m)``."""
        return [self.expert_input(m, x, features[:, m]) for m, x in enumerate(inputs)]

    def predict_experts(self, cues: list[Tensor]) -> Tensor:
        """``M`` expert inputs -> ``(B, M, EXPERT_OUTPUTS)``, log-variances clamped to [-16, 8]."""
        out = torch.stack([e(n(c)) for e, n, c in zip(self.experts, self.inputs, cues, strict=True)], dim=1)
        return torch.cat(
            [out[..., :3], out[..., 3:6].clamp(-16, 8), out[..., 6:12], out[..., 12:].clamp(-16, 8)], -1
        )

    def fuse(self, experts: Tensor, weights: Tensor) -> Tensor:
        """``experts (B, M, 13)``, ``weights (B, M)`` (zero where missing) -> ``(B, 9)`` ``[x, y, z, r6]``."""
        trust = (weights * weights.shape[1]).unsqueeze(-1)  # (B, M, 1)
        prec = torch.exp(-experts[..., 3:6]) / self.calibration[:, :1] * trust  # (B, M, 3)
        mu = (prec * experts[..., :3]).sum(1) / prec.sum(1).clamp_min(1e-12)
        prec_r = torch.exp(-experts[..., 12:]) / self.calibration[:, 1:] * trust  # (B, M, 1)
        r6 = matrix_to_rotation_6d(rotation_6d_to_matrix(experts[..., 6:12]))  # each expert's, orthonormal
        r6 = (prec_r * r6).sum(1) / prec_r.sum(1).clamp_min(1e-12)
        return torch.cat([mu * self.position.scale + self.position.loc, r6], dim=1)


class MultimodalModel(nn.Module):
    """Encoders for every modality, the lambda fusion and the pose head.

    Args:
        specs: modality name -> :class:`ModalitySpec`; its order is the modality axis everywhere.
        cfg: the ``model`` config section.
    """

    def __init__(self, specs: Mapping[str, ModalitySpec], cfg: ModelConfig) -> None:
        super().__init__()
        unknown = [n for n, s in specs.items() if s.kind not in MODALITY_KINDS]
        if unknown:
            raise ValueError(f"no encoder for modalities {unknown}")
        self.specs = dict(specs)
        self.cfg = cfg
        self.modalities = tuple(specs)
        self.encoders = nn.ModuleDict(
            {
                n: FrameEncoder(s, cfg) if s.kind in GRID_KINDS else SeriesEncoder(s, cfg)
                for n, s in specs.items()
            }
        )
        self.modality_logits = nn.Parameter(torch.zeros(len(specs)))
        self.pose_head = PoseHead(specs, cfg) if cfg.pose_head else None

    @property
    def lambdas(self) -> Tensor:
        """``(M,)`` the global modality weights softmax(logits), before masking."""
        return torch.softmax(self.modality_logits, dim=0)

    @torch.no_grad()
    def fit_input_stats(self, batch: Batch) -> None:
        """Fit every encoder's input standardisation on the present samples of ``batch``."""
        for m, name in enumerate(self.modalities):
            present = batch.mask[:, m]
            if present.sum() < 2:
                continue
            enc = self.encoders[name]
            enc.norm.fit(enc.frames(batch.inputs[name][present]))
        if self.pose_head is None:
            return
        if batch.pose is not None and len(batch) >= 2:
            self.pose_head.position.fit(batch.pose[:, :3])
        self.fit_expert_inputs(batch.inputs, self.features(batch.inputs), batch.mask)

    @torch.no_grad()
    def fit_expert_inputs(self, inputs: Mapping[str, Tensor], features: Tensor, mask: Tensor) -> None:
        """Fit the pose experts' input standardisation on the present windows of ``features``."""
        cues = self.pose_head.expert_inputs([inputs[n] for n in self.modalities], features)
        for m, (norm, cue) in enumerate(zip(self.pose_head.inputs, cues, strict=True)):
            if mask[:, m].sum() >= 2:
                norm.fit(cue[mask[:, m]])

    def features(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """``(B, M, d)`` every encoder's feature before unit normalisation."""
        return torch.stack([self.encoders[n](inputs[n]) for n in self.modalities], dim=1)

    def forward(self, inputs: Mapping[str, Tensor], mask: Tensor) -> ModelOutput:
        """Encode a batch.

        Args:
            inputs: modality -> ``(B, samples, ...)`` in the layout of :mod:`core.data.batch`.
            mask: ``(B, M)`` bool.
        """
        features = self.features(inputs)  # (B, M, d)
        z = F.normalize(features, dim=-1)
        weights = masked_weights(self.modality_logits, mask)  # (B, M)
        fused = F.normalize((weights.unsqueeze(-1) * z).sum(1), dim=-1)
        if self.pose_head is None:
            experts = fused.new_zeros(fused.shape[0], len(self.modalities), EXPERT_OUTPUTS)
            pose = fused.new_zeros(fused.shape[0], 9)
        else:
            cues = self.pose_head.expert_inputs([inputs[n] for n in self.modalities], features)
            experts = self.pose_head.predict_experts(cues)
            pose = self.pose_head.fuse(experts, weights)
        return ModelOutput(z, fused, weights, pose, experts)


class IncompatibleWeights(ValueError):
    """A ``state_dict`` whose keys or shapes differ from the model's."""


def check_compatible(model: MultimodalModel, state: Mapping[str, Tensor]) -> None:
    """Raise :class:`IncompatibleWeights` unless ``state`` has exactly ``model``'s keys and shapes.

    Checked before loading because ``load_state_dict`` copies matching entries before it reports a
    mismatch, which would leave a half-replaced model.
    """
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or extra or wrong:
        raise IncompatibleWeights(
            f"weights do not fit this model: missing {missing[:3]}, unexpected {extra[:3]}, shape {wrong[:3]}"
        )
