"""The tensor layout every model, objective and trainer consumes: a stack of windows.

A window (``core/data/windows.py``) holds per modality an array ``(samples, *sample_shape)`` and a
present/missing flag; a :class:`Batch` stacks ``B`` of them into ``{modality: (B, samples, ...)}``
plus one ``(B, M)`` bool mask whose columns follow :attr:`Batch.modalities`. Layouts per kind:

- image ``(B, 1, H, W, 3)`` uint8 RGB; depth ``(B, 1, H, W)`` float metres;
- tactile ``(B, T, H, W)`` float taxel frames;
- wrench / imu / joints ``(B, T, V)`` float series.

Missing modalities hold zeros and a False mask entry: they are encoded like any other input
(fixed shapes keep ONNX and batching simple) and then excluded from fusion and every loss.

:func:`to_batch` is the one way from windows to a batch, live and offline alike: the perception
pipeline (one window at a time), the bag dataset, the online replay buffer and the experiments all
build their batches with it, in the layout of the model that will read them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np
import torch
from torch import Tensor


class WindowLike(Protocol):
    """What :func:`to_batch` reads from a window; ``core.data.windows.Window`` has these fields."""

    stamp_ns: int
    data: Mapping[str, np.ndarray]
    mask: Mapping[str, bool]


@dataclass
class Batch:
    """``B`` windows as tensors.

    Attributes:
        inputs: modality -> ``(B, samples, ...)``, zeros where masked.
        mask: ``(B, M)`` bool, column ``m`` for ``modalities[m]``.
        modalities: modality names, the order of the mask columns and of every ``(.., M, ..)`` axis.
        stamps_ns: ``(B,)`` int64 pivot stamps.
        pose: ``(B, 7)`` end-effector ground truth ``[x, y, z, qx, qy, qz, qw]`` (base frame), if known.
    """

    inputs: dict[str, Tensor]
    mask: Tensor
    modalities: tuple[str, ...]
    stamps_ns: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    pose: Tensor | None = None

    def __post_init__(self) -> None:
        if tuple(self.inputs) != self.modalities:
            raise ValueError(f"inputs {tuple(self.inputs)} do not follow modalities {self.modalities}")
        b = self.mask.shape[0]
        if self.mask.dtype != torch.bool or self.mask.shape != (b, len(self.modalities)):
            raise ValueError(
                f"mask must be bool (B, {len(self.modalities)}), got {self.mask.dtype} {self.mask.shape}"
            )
        for name, x in self.inputs.items():
            if x.shape[0] != b:
                raise ValueError(f"{name}: batch {x.shape[0]} != mask batch {b}")
        if self.pose is not None and self.pose.shape != (b, 7):
            raise ValueError(f"pose must be (B, 7), got {tuple(self.pose.shape)}")

    def __len__(self) -> int:
        return self.mask.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on ``device``."""
        return Batch(
            {k: v.to(device, non_blocking=True) for k, v in self.inputs.items()},
            self.mask.to(device),
            self.modalities,
            self.stamps_ns,
            None if self.pose is None else self.pose.to(device),
        )

    def masked(self, keep: Tensor) -> Batch:
        """The same windows with only the modalities ``keep`` ``(B, M)`` (and the mask) left present:
        the others masked and zeroed."""
        mask = self.mask & keep
        inputs = {
            k: v * mask[:, m].reshape(-1, *([1] * (v.dim() - 1))).to(v.dtype)
            for m, (k, v) in enumerate(self.inputs.items())
        }
        return Batch(inputs, mask, self.modalities, self.stamps_ns, self.pose)

    def select(self, rows: Tensor) -> Batch:
        """The sub-batch of ``rows`` (an index or bool tensor over ``B``)."""
        return Batch(
            {k: v[rows] for k, v in self.inputs.items()},
            self.mask[rows],
            self.modalities,
            self.stamps_ns[rows] if len(self.stamps_ns) else self.stamps_ns,
            None if self.pose is None else self.pose[rows],
        )


def to_frames(kind: str, x: Tensor) -> Tensor:
    """A frame modality's batch layout as channels-first float frames ``(B, C, H, W)``.

    image ``(B, 1, H, W, 3)`` uint8 -> RGB in ``[0, 1]``; depth ``(B, 1, H, W)`` -> ``log1p`` of metres
    (compresses the far range, where depth noise grows quadratically with distance); tactile
    ``(B, T, H, W)`` -> its time axis as channels.
    """
    if kind == "image":
        return x[:, 0].permute(0, 3, 1, 2).float() / 255.0
    if kind == "depth":
        return torch.log1p(x.float().clamp_min(0.0))
    if kind == "tactile":
        return x.float()
    raise ValueError(f"{kind!r} is not a frame modality")


def _fit_frame(x: np.ndarray, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """Resize a ``(1, H, W[, 3])`` camera or depth frame to ``shape`` (area averaging for colour;
    nearest for depth, which must not blend an edge's foreground and background)."""
    height, width = shape[1], shape[2]
    interp = cv2.INTER_AREA if kind == "image" else cv2.INTER_NEAREST
    return cv2.resize(x[0], (width, height), interpolation=interp)[None]


@dataclass(frozen=True)
class ModalitySpec:
    """One modality of a model's input layout: its kind and the per-window shape ``(samples, ...)``
    (what an encoder is built for, and what :func:`to_batch` fits a window to)."""

    kind: str
    shape: tuple[int, ...]

    @staticmethod
    def from_batch(batch: Batch, kinds: Mapping[str, str]) -> dict[str, ModalitySpec]:
        """Specs of every modality of ``batch``; ``kinds`` maps names to config kinds."""
        return {n: ModalitySpec(kinds[n], tuple(batch.inputs[n].shape[1:])) for n in batch.modalities}


def to_batch(
    windows: Sequence[WindowLike],
    layout: Mapping[str, ModalitySpec],
    poses: Sequence[np.ndarray | None] | None = None,
    *,
    mismatch: Callable[[str], None] | None = None,
) -> Batch:
    """``windows`` as one :class:`Batch` in a model's input layout.

    ``layout`` (a model's ``specs``: modality -> kind and per-window shape) decides the modalities,
    their order (the mask columns) and every input's shape. Per window and modality of the layout:

    - present and of the layout's shape: taken as it is;
    - a camera or depth frame of another size: resized to the layout's (area averaging for colour,
      nearest for depth), so a bag or a camera of another resolution fits the model;
    - absent from the window, masked in it, or without a sample yet (a stream that has not delivered
      since the start, whose part has no shape): zeros and a False mask entry.

    Modalities of the windows that the layout lacks are left out.

    Args:
        poses: one ``(7,)`` ground-truth pose or None per window; the batch has ``pose`` when every
            window has one.
        mismatch: called with the reason when a present input does not fit the layout even after
            resizing (another tactile grid, another joint count); the input is then masked. None:
            raise ``ValueError`` instead.
    """
    if not windows:
        raise ValueError("cannot batch an empty list of windows")
    n = len(windows)
    if poses is not None and len(poses) != n:
        raise ValueError(f"{len(poses)} poses for {n} windows")
    inputs: dict[str, Tensor] = {}
    mask = np.zeros((n, len(layout)), dtype=bool)
    for m, (name, spec) in enumerate(layout.items()):
        out = np.zeros((n, *spec.shape), dtype=np.uint8 if spec.kind == "image" else np.float32)
        for i, window in enumerate(windows):
            x = window.data.get(name)
            if x is None or not window.mask.get(name, False):
                continue
            if spec.kind in ("image", "depth") and x.shape != spec.shape and x.ndim == len(spec.shape):
                x = _fit_frame(x, spec.shape, spec.kind)
            if x.shape != spec.shape:
                problem = f"{name}: window shape {x.shape} does not fit the model's {spec.shape}"
                if mismatch is None:
                    raise ValueError(problem)
                mismatch(f"{problem}; masked")
                continue
            out[i] = x
            mask[i, m] = True
        inputs[name] = torch.from_numpy(out)
    stamps = torch.tensor([w.stamp_ns for w in windows], dtype=torch.int64)
    pose = None
    if poses is not None and all(p is not None for p in poses):
        pose = torch.from_numpy(np.stack(poses).astype(np.float32))
    return Batch(inputs, torch.from_numpy(mask), tuple(layout), stamps, pose)


def channel_std(kind: str, x: Tensor) -> Tensor:
    """Per-channel standard deviation of a modality's batch, broadcastable against ``x``.

    Channels: the colour of an image, each variable of a series (everything after the time axis),
    one for depth and tactile frames. A modality's "own std" for noise and for the health monitor.
    """
    x = x.float()
    if kind == "image":
        dims = (0, 1, 2, 3)  # (B, 1, H, W, 3): per colour
    elif kind in ("depth", "tactile"):
        dims = tuple(range(x.dim()))
    else:
        dims = (0, 1)  # (B, T, ...): per variable
    if x.shape[0] * x[0].numel() < 2:
        return torch.zeros((1,) * x.dim())
    return x.std(dim=dims, keepdim=True)


def add_noise(kind: str, x: Tensor, std: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``x`` plus Gaussian noise of ``std`` (e.g. :func:`channel_std`), in ``x``'s dtype and range:
    uint8 images are rounded and clipped to 0..255, depth and tactile stay non-negative."""
    noisy = x.float() + std * torch.randn(x.shape, generator=generator)
    if kind == "image":
        return noisy.round().clamp(0, 255).to(torch.uint8)
    if kind in ("depth", "tactile"):
        noisy = noisy.clamp_min(0.0)
    return noisy.to(x.dtype)


def concat(batches: Sequence[Batch]) -> Batch:
    """One batch of all rows of ``batches`` (same modalities; poses kept when all have them)."""
    first = batches[0]
    pose = None if any(b.pose is None for b in batches) else torch.cat([b.pose for b in batches])
    return Batch(
        {k: torch.cat([b.inputs[k] for b in batches]) for k in first.modalities},
        torch.cat([b.mask for b in batches]),
        first.modalities,
        torch.cat([b.stamps_ns for b in batches]),
        pose,
    )
