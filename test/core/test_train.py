"""train_step's guard, checkpoints, the replay buffer and the online trainer's weight swap."""

import threading

import pytest
import torch

from structalign_ros.core.batch import Batch
from structalign_ros.core.config import ModelConfig, StructAlignConfig, TrainConfig
from structalign_ros.core.models import IncompatibleWeights, ModalitySpec, MultimodalModel
from structalign_ros.core.objectives import PairwiseInfoNCE
from structalign_ros.core.runtime import Predictor
from structalign_ros.core.synthetic import SyntheticWorld
from structalign_ros.core.train import (
    CheckpointError,
    Trainer,
    evaluate,
    load_checkpoint,
    make_optimizer,
    save_checkpoint,
    seed_everything,
    train_step,
)

TINY = ModelConfig(embed_dim=16, width=8, image_size=16)


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(modalities=("rgb", "wrench", "imu"), image=16, steps=12)


def make_model(world, cfg=TINY):
    batch, _ = world.batch(8, seed=0)
    return MultimodalModel(ModalitySpec.from_batch(batch, world.kinds), cfg)


def config(**train):
    cfg = StructAlignConfig()
    cfg.model = TINY
    cfg.train = TrainConfig(**train)
    return cfg


def test_non_finite_step_is_skipped_and_weights_kept(world):
    model = make_model(world)
    objective = PairwiseInfoNCE()
    opt = make_optimizer(model, objective, TrainConfig())
    batch, _ = world.batch(16, seed=1)
    ok = train_step(model, batch, opt, objective)
    assert ok["skipped"] == 0.0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch.inputs["wrench"][3, 0, 0] = float("nan")
    bad = train_step(model, batch, opt, objective)
    assert bad["skipped"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    batch.inputs["wrench"][3, 0, 0] = 0.0
    assert train_step(model, batch, opt, objective)["skipped"] == 0.0


def test_a_batch_in_another_modality_order_is_refused_for_training_and_evaluation(world):
    # the model reads mask columns by position: swapped columns would silently mean other sensors
    model = make_model(world)
    objective = PairwiseInfoNCE()
    opt = make_optimizer(model, objective, TrainConfig())
    batch, _ = world.batch(8, seed=2)
    order = ("wrench", "rgb", "imu")
    columns = [batch.modalities.index(m) for m in order]
    swapped = Batch({m: batch.inputs[m] for m in order}, batch.mask[:, columns], order)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="do not match the model"):
        train_step(model, swapped, opt, objective)
    with pytest.raises(ValueError, match="do not match the model"):
        evaluate(model, objective, [swapped])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert evaluate(model, objective, [batch])["loss"] > 0  # the model's own order is accepted


def test_seeded_steps_are_reproducible(world):
    def run():
        seed_everything(3)
        model = make_model(world)
        objective = PairwiseInfoNCE()
        opt = make_optimizer(model, objective, TrainConfig())
        return [train_step(model, world.batch(16, seed=s)[0], opt, objective)["loss"] for s in range(3)]

    assert run() == run()


def test_trainer_counts_skips_and_checkpoints(world, tmp_path):
    cfg = config(steps=3, checkpoint_dir=str(tmp_path))
    batches = [world.batch(16, seed=s)[0] for s in range(4)]
    batches[1].inputs["imu"][0] = float("inf")
    trainer = Trainer(make_model(world), PairwiseInfoNCE(), cfg)
    trainer.fit(batches)
    assert (trainer.step, trainer.skipped) == (3, 1)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt.step == 3 and ckpt.config == cfg


def test_checkpoint_round_trip(world, tmp_path):
    model = make_model(world)
    cfg = config(seed=11)
    save_checkpoint(tmp_path / "a.pt", model, cfg, step=42)
    ckpt = load_checkpoint(tmp_path / "a.pt")
    assert ckpt.step == 42 and ckpt.config.train.seed == 11 and ckpt.specs == model.specs
    rebuilt = ckpt.build_model()
    batch, _ = world.batch(4, seed=5)
    with torch.no_grad():
        a, b = model.eval()(batch.inputs, batch.mask), rebuilt.eval()(batch.inputs, batch.mask)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not list(tmp_path.glob(".*.tmp")), "the temp file must be renamed away"


def test_corrupt_or_foreign_checkpoint_gives_a_clear_error_and_keeps_the_previous(world, tmp_path):
    model = make_model(world)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, config())
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)
    torch.save({"format": 99}, path)
    with pytest.raises(CheckpointError, match="format 99"):
        load_checkpoint(path)
    # an object that needs code to unpickle is refused by weights_only loading
    torch.save({"format": 1, "payload": threading.Lock}, path)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(path)

    # a checkpoint of another architecture: the predictor keeps serving its current weights
    predictor = Predictor.from_model(model)
    batch, _ = world.batch(4, seed=6)
    before = predictor(batch)
    wider = make_model(world, ModelConfig(embed_dim=16, width=16, image_size=16))
    with pytest.raises(IncompatibleWeights, match="do not fit"):
        predictor.swap_weights(wider.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(before, predictor(batch), strict=True))
