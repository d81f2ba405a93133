"""A model's sensor-health clean levels, measured on held-out episodes.

:class:`~core.serve.health.ModalityHealth` compares each modality's signals with their clean level.
Learned from the first windows of a run (the warm-up), a sensor already failing at start-up becomes
the reference; measured here on clean held-out episodes with the delivered weights and stored in the
checkpoint (``structalign train``), they let the live node judge the first windows too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.data.dataset import labelled_episode
from structalign_ros.core.learn.models import MultimodalModel
from structalign_ros.core.serve.health import clean_references

CHUNK = 256  # windows per forward pass


def measure_health_levels(
    model: MultimodalModel, paths: Sequence[str | Path], config: StructAlignConfig
) -> dict | None:
    """:func:`~core.serve.health.clean_references` of ``model`` over the episodes ``paths`` (each
    in time order, with the live node's ``node.health_windows``); None when ``node.sensor_health``
    is off or no episode has a labelled window."""
    if not config.node.sensor_health:
        return None
    head = model.pose_head
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    episodes = [b for b in (labelled_episode(p, config, model.specs) for p in paths) if b is not None]
    if not episodes:
        return None

    def windows(batch: Any) -> Iterator[tuple[np.ndarray, ...]]:
        for i in range(0, len(batch), CHUNK):
            part = batch.select(torch.arange(i, min(i + CHUNK, len(batch)))).to(device)
            with torch.inference_mode():
                out = model(part.inputs, part.mask)
            emb, weights = out.embeddings.float().cpu().numpy(), out.weights.float().cpu().numpy()
            experts = out.pose_experts.float().cpu().numpy() if head is not None else None
            mask = part.mask.cpu().numpy()
            for k in range(len(mask)):
                yield emb[k], mask[k], weights[k], None if experts is None else experts[k]

    try:
        return clean_references(
            (windows(b) for b in episodes),
            model.modalities,
            None if head is None else head.calibration.cpu().numpy(),
            size=config.node.health_windows,
        )
    finally:
        model.train(was)
