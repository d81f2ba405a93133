"""Synthetic structured multimodal batches for tests and benchmarks.

A latent state per window (a class centre plus noise) is pushed through a different fixed random
nonlinear map per modality, producing data in the real batch layout (:mod:`core.data.batch`). Paired
modalities therefore share information, and the class label gives a linear-probe target. A modality
can be replaced by pure noise to check that training turns its weight down.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from structalign_ros.core.data.batch import Batch

KINDS = {
    "rgb": "image",
    "depth": "depth",
    "tactile": "tactile",
    "wrench": "wrench",
    "imu": "imu",
    "joints": "joints",
}
LATENT = 6


class SyntheticWorld:
    """Fixed per-modality maps from a latent state to sensor data.

    Args:
        modalities: names from :data:`KINDS`, in batch order.
        classes: number of latent clusters (the probe labels).
        spread: scale of the class centres against the unit within-class noise; small = a hard probe.
        image: camera/depth side; tactile is ``tactile x tactile``; series are ``steps`` long.
        seed: the maps and class centres.
    """

    def __init__(
        self,
        modalities: tuple[str, ...] = tuple(KINDS),
        classes: int = 4,
        spread: float = 2.0,
        image: int = 32,
        tactile: int = 8,
        steps: int = 16,
        seed: int = 0,
    ) -> None:
        self.modalities = modalities
        self.kinds = {m: KINDS[m] for m in modalities}
        self.classes = classes
        self.image, self.tactile, self.steps = image, tactile, steps
        g = torch.Generator().manual_seed(seed)
        self.centres = spread * torch.randn(classes, LATENT, generator=g)
        self.maps = {m: torch.randn(LATENT, 64, generator=g) / math.sqrt(LATENT) for m in modalities}
        self.mixes = {m: torch.randn(64, 64, generator=g) / 8.0 for m in modalities}
        self.freqs = torch.linspace(0.5, 3.0, 8)

    def _features(self, name: str, z: torch.Tensor) -> torch.Tensor:
        """A modality's nonlinear view of the latent: ``(B, LATENT)`` -> ``(B, 64)``."""
        return torch.tanh(torch.tanh(z @ self.maps[name]) @ self.mixes[name] * 3.0)

    def _render(self, name: str, z: torch.Tensor) -> torch.Tensor:
        f = self._features(name, z)  # (B, 64)
        b = z.shape[0]
        kind = self.kinds[name]
        if kind in ("image", "depth"):
            grid = f.view(b, 1, 8, 8).repeat(1, 3 if kind == "image" else 1, 1, 1)
            img = F.interpolate(grid, size=(self.image, self.image), mode="bilinear", align_corners=False)
            if kind == "image":
                return ((img * 0.5 + 0.5) * 255).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)[:, None]
            return 1.0 + img  # (B, 1, H, W) metres
        if kind == "tactile":
            grid = f.view(b, 1, 8, 8)
            taxels = F.interpolate(
                grid, size=(self.tactile, self.tactile), mode="bilinear", align_corners=False
            )
            ramp = torch.linspace(0.2, 1.0, 4).view(1, 4, 1, 1)
            return torch.relu(taxels) * ramp  # (B, 4, h, w): contact building up
        variables = {"wrench": 6, "imu": 6, "joints": 7}[kind]
        t = torch.linspace(0, 1, self.steps)
        basis = torch.sin(2 * math.pi * self.freqs[:, None] * t[None]).T  # (T, 8)
        amp = f[:, : 8 * variables].reshape(b, 8, variables)  # (B, 8, V)
        return torch.einsum("tk,bkv->btv", basis, amp)  # (B, T, V)

    def batch(
        self,
        size: int,
        seed: int,
        noise: float = 0.3,
        corrupt: str | None = None,
        drop: float = 0.0,
    ) -> tuple[Batch, torch.Tensor]:
        """A batch and its ``(B,)`` class labels.

        Args:
            noise: latent noise around the class centre (within-class structure).
            corrupt: a modality replaced by data from an independent latent (same marginals, no pairing).
            drop: probability of masking each modality of each window (at least one stays present).
        """
        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, self.classes, (size,), generator=g)
        z = self.centres[labels] + noise * torch.randn(size, LATENT, generator=g)
        inputs = {}
        for name in self.modalities:
            src = z
            if name == corrupt:
                src = self.centres[torch.randint(0, self.classes, (size,), generator=g)]
                src = src + noise * torch.randn(size, LATENT, generator=g)
            inputs[name] = self._render(name, src)
        mask = torch.rand(size, len(self.modalities), generator=g) >= drop
        mask[torch.arange(size), torch.randint(0, len(self.modalities), (size,), generator=g)] = True
        for m, name in enumerate(self.modalities):
            inputs[name][~mask[:, m]] = 0
        position = torch.tanh(z[:, :3])
        quat = F.normalize(torch.cat([z[:, 3:6], torch.ones(size, 1)], dim=1), dim=1)
        pose = torch.cat([position, quat], dim=1)
        stamps = torch.arange(size, dtype=torch.int64) * 33_000_000
        return Batch(inputs, mask, self.modalities, stamps, pose), labels
