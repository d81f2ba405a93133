"""Per-modality encoders, the lambda-weighted fusion and the end-effector pose head.

Every encoder maps its modality's batch layout (see :mod:`structalign_ros.core.batch`) to a unit
vector in a shared ``R^d``. The modality weights are ``lambda = softmax(logits)``, renormalised per
sample over the modalities present (a missing modality gets weight exactly 0 and does not dilute
the others). The fused embedding is the normalised lambda-weighted sum; the pose head regresses
``[x, y, z]`` plus the 6D rotation representation from it.

Sizes are chosen for the live node: 30 Hz on 2 CPU cores with six modalities, and exportable to ONNX
(only convolutions, GRU, linear layers and elementwise ops).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structalign_ros.core.batch import Batch, to_frames
from structalign_ros.core.config import ModelConfig

FRAME_ENCODED = ("image", "depth", "tactile")
SERIES_ENCODED = ("wrench", "imu", "joints")


@dataclass(frozen=True)
class ModalitySpec:
    """What an encoder is built for: the modality kind and the per-window shape ``(samples, ...)``."""

    kind: str
    shape: tuple[int, ...]

    @staticmethod
    def from_batch(batch: Batch, kinds: Mapping[str, str]) -> dict[str, ModalitySpec]:
        """Specs of every modality of ``batch``; ``kinds`` maps names to config kinds."""
        return {n: ModalitySpec(kinds[n], tuple(batch.inputs[n].shape[1:])) for n in batch.modalities}


class ModelOutput(NamedTuple):
    """What the model produces per batch (and what the predictor returns).

    Attributes:
        embeddings: ``(B, M, d)`` unit vectors, modality axis in ``Batch.modalities`` order.
        fused: ``(B, d)`` unit vector.
        weights: ``(B, M)`` lambda renormalised over the present modalities (rows sum to 1, or 0 when
            nothing is present).
        pose: ``(B, 9)`` ``[x, y, z, r6]``; see :func:`rotations.rotation_6d_to_matrix`.
    """

    embeddings: Tensor
    fused: Tensor
    weights: Tensor
    pose: Tensor


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
        self.proj = nn.Linear(2 * w, cfg.embed_dim)

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
        return self.proj(feat)


def masked_weights(logits: Tensor, mask: Tensor) -> Tensor:
    """lambda = softmax(logits) renormalised over the present modalities.

    Args:
        logits: ``(M,)``; mask: ``(B, M)`` bool.

    Returns:
        ``(B, M)``, zero where masked; rows with nothing present are all zero (not NaN).
    """
    w = torch.softmax(logits, dim=0).unsqueeze(0) * mask.to(logits.dtype)  # (B, M)
    return w / w.sum(1, keepdim=True).clamp_min(1e-12)


class MultimodalModel(nn.Module):
    """Encoders for every modality, the lambda fusion and the pose head.

    Args:
        specs: modality name -> :class:`ModalitySpec`; its order is the modality axis everywhere.
        cfg: the ``model`` config section.
    """

    def __init__(self, specs: Mapping[str, ModalitySpec], cfg: ModelConfig) -> None:
        super().__init__()
        unknown = [n for n, s in specs.items() if s.kind not in FRAME_ENCODED + SERIES_ENCODED]
        if unknown:
            raise ValueError(f"no encoder for modalities {unknown}")
        self.specs = dict(specs)
        self.cfg = cfg
        self.modalities = tuple(specs)
        self.encoders = nn.ModuleDict(
            {
                n: FrameEncoder(s, cfg) if s.kind in FRAME_ENCODED else SeriesEncoder(s, cfg)
                for n, s in specs.items()
            }
        )
        self.modality_logits = nn.Parameter(torch.zeros(len(specs)))
        self.pose_head = (
            nn.Sequential(nn.Linear(cfg.embed_dim, 2 * cfg.width), nn.SiLU(), nn.Linear(2 * cfg.width, 9))
            if cfg.pose_head
            else None
        )

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

    def forward(self, inputs: Mapping[str, Tensor], mask: Tensor) -> ModelOutput:
        """Encode a batch.

        Args:
            inputs: modality -> ``(B, samples, ...)`` in the layout of :mod:`core.batch`.
            mask: ``(B, M)`` bool.
        """
        z = torch.stack([self.encoders[n](inputs[n]) for n in self.modalities], dim=1)  # (B, M, d)
        z = F.normalize(z, dim=-1)
        weights = masked_weights(self.modality_logits, mask)  # (B, M)
        mixed = (weights.unsqueeze(-1) * z).sum(1)  # (B, d)
        fused = F.normalize(mixed, dim=-1)
        if self.pose_head is None:
            pose = mixed.new_zeros(mixed.shape[0], 9)
        else:
            pose = self.pose_head(mixed)
        return ModelOutput(z, fused, weights, pose)
