"""The experiments' data: simulated episodes recorded once, read through the node's window pipeline,
frames brought to 32 x 32 by ``batch.to_batch``, one :class:`Split` per episode."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.data.bags import iter_samples
from structalign_ros.core.data.batch import Batch, ModalitySpec, to_batch
from structalign_ros.core.data.dataset import bag_layout, iter_windows
from structalign_ros.core.eval.evaluation import contact_labels, object_speed
from structalign_ros.core.sim.record import record_episode

IMAGE = 32  # camera and depth side after the one-off resizing


@dataclass
class Split:
    """Windows of some episodes as one in-memory batch, with labels."""

    batch: Batch
    position: torch.Tensor  # (N, 3) end-effector position, metres
    contact: torch.Tensor  # (N,) int

    def __len__(self) -> int:
        return len(self.batch)


@dataclass
class Setup:
    """What every experiment gets: the training and held-out windows, the modality kinds, the seeds."""

    train: Split
    test: Split
    kinds: dict[str, str]
    seeds: list[int]
    log: Callable[[str], None]


def load_episodes(
    cache: Path, episodes: int, seconds: float, log: Callable[[str], None]
) -> tuple[list[Split], dict[str, str], float]:
    """Record (once) and read ``episodes`` simulated episodes; one :class:`Split` each.

    Returns the splits, modality kinds and the seconds spent recording and reading.
    """
    config = StructAlignConfig()
    kinds = {n: m.kind for n, m in config.modalities.items() if m.enabled}
    start = time.perf_counter()
    out = []
    for e in range(episodes):
        key = hashlib.sha1(f"{e}-{seconds}-{IMAGE}-v3".encode()).hexdigest()[:10]
        tensors = cache / f"episode_{e}_{key}.pt"
        if not tensors.exists():
            bag = cache / f"episode_{e}_{key}"
            if not bag.exists():
                record_episode(bag, config, seed=1000 + e, seconds=seconds)
            items = [(w, p) for w, p in iter_windows([bag], config) if p is not None]
            # the live path's layout, camera and depth at IMAGE x IMAGE (area / nearest resizing)
            frames = {"image": (1, IMAGE, IMAGE, 3), "depth": (1, IMAGE, IMAGE)}
            layout = {
                n: ModalitySpec(spec.kind, frames.get(spec.kind, spec.shape))
                for n, spec in bag_layout([bag], config).items()
            }
            batch = to_batch([w for w, _ in items], layout, [p for _, p in items])
            track = [(t, v[:3]) for _, t, v in iter_samples([bag], {}, None, config.sim.object_pose_topic)]
            speed = object_speed(
                np.array([t for t, _ in track]), np.array([v for _, v in track]), batch.stamps_ns.numpy()
            )
            saved = {
                "inputs": batch.inputs,
                "mask": batch.mask,
                "pose": batch.pose,
                "stamps": batch.stamps_ns,
            }
            torch.save({**saved, "speed": torch.as_tensor(speed)}, tensors)
        saved = torch.load(tensors, weights_only=True)
        batch = Batch(saved["inputs"], saved["mask"], tuple(saved["inputs"]), saved["stamps"], saved["pose"])
        out.append(Split(batch, batch.pose[:, :3].float(), contact_labels(batch, saved["speed"].numpy())))
        log(f"episode {e}: {len(batch)} windows, contact {float(out[-1].contact.float().mean()):.2f}")
    return out, kinds, time.perf_counter() - start


def concat(splits: list[Split]) -> Split:
    b = [s.batch for s in splits]
    batch = Batch(
        {n: torch.cat([x.inputs[n] for x in b]) for n in b[0].modalities},
        torch.cat([x.mask for x in b]),
        b[0].modalities,
        pose=torch.cat([x.pose for x in b]),
    )
    return Split(batch, torch.cat([s.position for s in splits]), torch.cat([s.contact for s in splits]))
