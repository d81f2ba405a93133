"""Data-parallel training: two CPU processes (gloo) through Trainer end with identical replicas."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from structalign_ros.core.config import ModelConfig, ObjectiveConfig, StructAlignConfig, TrainConfig
from structalign_ros.core.data.batch import ModalitySpec
from structalign_ros.core.eval.synthetic import SyntheticWorld
from structalign_ros.core.learn.models import MultimodalModel
from structalign_ros.core.learn.objectives import build_objective
from structalign_ros.core.learn.train import Trainer, seed_everything

MODALITIES = ("rgb", "tactile", "wrench")


def _replica(rank: int, world: int, init_file: str, out_dir: str, objective: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        seed_everything(100 + rank)  # different initial weights: DDP must start every rank from rank 0's
        world_data = SyntheticWorld(modalities=MODALITIES, image=16, tactile=4, steps=8)
        config = StructAlignConfig()
        config.model = ModelConfig(embed_dim=16, width=8, image_size=16)
        config.objective = ObjectiveConfig(name=objective, pose_weight=0.0)
        config.train = TrainConfig(batch_size=16, steps=3, lr=1e-2)
        first, _ = world_data.batch(16, seed=rank)
        model = MultimodalModel(ModalitySpec.from_batch(first, world_data.kinds), config.model)
        model.fit_input_stats(first)
        objective_module = build_objective(config.objective, world_data.kinds, 16)
        trainer = Trainer(model, objective_module, config)
        assert trainer.distributed
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        # each rank sees its own data, as with sharded bags
        batches = [world_data.batch(16, seed=10 * rank + s)[0] for s in range(3)]
        trainer.fit(batches)
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        state.update({f"objective.{k}": v for k, v in objective_module.state_dict().items()})
        state.update({f"initial.{k}": v for k, v in initial.items()})
        torch.save({"state": state, "steps": trainer.step}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_replicas_end_identical(tmp_path):
    # OTM: the objective has parameters of its own (decoders), uses lambda, hides modalities at
    # random per rank, and the pose head gets no loss (pose_weight 0): every case the DDP wrapper
    # must reduce identically on both ranks.
    objective = "otm"
    world = 2
    mp.spawn(_replica, args=(world, str(tmp_path / "pg"), str(tmp_path), objective), nprocs=world, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["steps"] == r1["steps"] == 3
    final = [k for k in r0["state"] if not k.startswith("initial.")]
    assert any(k.startswith("objective.") for k in final) == (objective == "otm")
    for key in final:
        assert torch.equal(r0["state"][key], r1["state"][key]), key
    # the replicas trained (weights moved) though each saw different batches
    moved = [
        k
        for k in r0["state"]
        if k.startswith("initial.") and not torch.equal(r0["state"][k], r0["state"]["model." + k[8:]])
    ]
    assert len(moved) > 10
