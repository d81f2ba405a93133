"""train_step's guard, checkpoints, the replay buffer and the online trainer's weight swap."""

import threading

import pytest
import torch

from structalign_ros.core.config import ModelConfig, StructAlignConfig, TrainConfig
from structalign_ros.core.data.batch import Batch, ModalitySpec
from structalign_ros.core.eval.synthetic import SyntheticWorld
from structalign_ros.core.learn.models import IncompatibleWeights, MultimodalModel
from structalign_ros.core.learn.objectives import PairwiseInfoNCE
from structalign_ros.core.learn.train import (
    CheckpointError,
    Trainer,
    TrainHooks,
    evaluate,
    load_checkpoint,
    make_optimizer,
    save_checkpoint,
    seed_everything,
    train_step,
)
from structalign_ros.core.serve.runtime import Predictor

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


class _Events(TrainHooks):
    def __init__(self):
        self.events = []

    def on_step(self, trainer, metrics):
        self.events.append(("step", trainer.step, trainer.epoch))

    def on_validate(self, trainer, metrics):
        self.events.append(("val", trainer.step, trainer.epoch))

    def on_epoch_end(self, trainer):
        self.events.append(("epoch", trainer.step, trainer.epoch))

    def on_end(self, trainer):
        self.events.append(("end", trainer.step, trainer.epoch))


def test_fit_passes_validation_checkpoints_and_hooks(world, tmp_path):
    batches = [world.batch(16, seed=s)[0] for s in range(6)]
    held_out = [world.batch(16, seed=99)[0]]
    trainer = Trainer(make_model(world), PairwiseInfoNCE(), config(steps=5))
    hooks = _Events()
    val = trainer.fit(
        iter(batches),
        steps_per_epoch=2,
        validation=lambda: held_out,
        validate_every=3,
        save_dir=tmp_path,
        save_every=4,
        hooks=[hooks],
    )
    steps = [(s, e) for kind, s, e in hooks.events if kind == "step"]
    assert steps == [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2)]  # the epoch counted at each pass end
    assert [(k, s, e) for k, s, e in hooks.events if k != "step"] == [
        ("val", 2, 1), ("epoch", 2, 1),
        ("val", 3, 1),  # every 3 steps, within the pass
        ("val", 4, 2), ("epoch", 4, 2),
        ("val", 5, 3), ("epoch", 5, 3),  # the last step: the pass-end validation only
        ("end", 5, 3),
    ]  # fmt: skip
    assert val == trainer.last_val and "loss" in val
    assert load_checkpoint(tmp_path / "last.pt").step == 5 and (tmp_path / "resume.pt").exists()

    resumed = Trainer(make_model(world), PairwiseInfoNCE(), config(steps=8))
    assert resumed.resume(tmp_path) and (resumed.step, resumed.epoch) == (5, 3)
    hooks = _Events()
    resumed.fit(batches[:2], steps_per_epoch=2, hooks=[hooks])  # runs dry after 2 of 3 steps
    assert [e for e in hooks.events if e[0] != "step"] == [("epoch", 6, 4), ("epoch", 7, 4), ("end", 7, 4)]


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
