"""Fixtures shared by test/core, test/ros and test/integration: a small simulated episode and a small
model trained on nothing but fitted to its input statistics (enough for the live path to run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.config_io import from_dict, save_yaml


def small_config(**sections) -> StructAlignConfig:
    """The default sensor suite at a small scale: 32x32 camera, a tiny model, a quick online trainer."""
    data = {
        "sim": {"width": 32, "height": 32},
        "model": {"embed_dim": 16, "width": 8, "image_size": 16},
        "objective": {"name": "unioma", "tck_members": 4, "gw_iterations": 3, "sinkhorn_iterations": 10},
        # the online trainer at normal priority: SCHED_IDLE starves it on a loaded machine, and the tests
        # wait for its steps (test_online checks the SCHED_IDLE default itself); the guard off, so that
        # every update of this untrained model is installed (test_online and test_perception check it)
        "train": {
            "guard_every": 0,
            "batch_size": 8,
            "head_steps": 20,
            "min_replay": 8,
            "replay_capacity": 64,
            "swap_period_s": 0.2,
            "online_idle_priority": False,
        },
        "runtime": {"backend": "torch", "threads": 1},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return from_dict(data)


@dataclass
class SmallWorld:
    config: StructAlignConfig
    bag: Path
    checkpoint: Path
    params: Path  # the config as a ROS parameter file


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> SmallWorld:
    import torch

    from structalign_ros.core.data.dataset import bag_layout, iter_windows, labelled_batch
    from structalign_ros.core.learn.models import MultimodalModel
    from structalign_ros.core.learn.train import save_checkpoint
    from structalign_ros.core.sim.record import record_episode

    root = tmp_path_factory.mktemp("small_world")
    config = small_config()
    bag = root / "episode"
    record_episode(bag, config, seed=3, seconds=3.0)
    items = [(w, p) for w, p in iter_windows([bag], config) if all(w.mask.values())][:32]
    layout = bag_layout([bag], config)
    batch = labelled_batch(items, layout)
    torch.manual_seed(0)
    model = MultimodalModel(layout, config.model)
    model.fit_input_stats(batch)
    checkpoint = root / "model.pt"
    save_checkpoint(checkpoint, model, config)
    params = root / "params.yaml"
    save_yaml(config, params)
    return SmallWorld(config, bag, checkpoint, params)
