"""Shared by the online-training tests: a tiny synthetic world and a fresh tiny model on it."""

import torch

from structalign_ros.core.config import ModelConfig
from structalign_ros.core.data.batch import ModalitySpec
from structalign_ros.core.eval.synthetic import SyntheticWorld
from structalign_ros.core.learn.models import MultimodalModel

TINY = ModelConfig(embed_dim=16, width=8, image_size=16)


def tiny_world() -> SyntheticWorld:
    return SyntheticWorld(modalities=("rgb", "wrench", "imu"), image=16, steps=12)


def make_model(world: SyntheticWorld) -> MultimodalModel:
    """The same seeded model every call, its input statistics fitted on one batch of ``world``."""
    batch, _ = world.batch(64, seed=0)
    torch.manual_seed(0)
    model = MultimodalModel(ModalitySpec.from_batch(batch, world.kinds), TINY)
    model.fit_input_stats(batch)
    return model
