"""train_step's guard, checkpoints, the replay buffer and the online trainer's weight swap."""

import threading
import time

import pytest
import torch

from structalign_ros.core.config import ModelConfig, StructAlignConfig, TrainConfig
from structalign_ros.core.models import ModalitySpec, MultimodalModel
from structalign_ros.core.objectives import PairwiseInfoNCE
from structalign_ros.core.runtime import Predictor
from structalign_ros.core.synthetic import SyntheticWorld
from structalign_ros.core.train import (
    CheckpointError,
    OnlineTrainer,
    ReplayBuffer,
    Trainer,
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
    with pytest.raises(CheckpointError, match="do not fit"):
        predictor.swap_weights(wider.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(before, predictor(batch), strict=True))


def test_replay_buffer_keeps_the_newest_and_samples_batches(world):
    buf = ReplayBuffer(10, world.modalities)
    for s in range(3):
        buf.add(world.batch(4, seed=s)[0])
    assert len(buf) == 10
    sample = buf.sample(6, torch.Generator().manual_seed(0))
    assert len(sample) == 6 and sample.modalities == world.modalities and sample.pose.shape == (6, 7)
    with pytest.raises(ValueError, match="modalities"):
        buf.add(SyntheticWorld(modalities=("rgb",), image=16).batch(2, seed=0)[0])


@pytest.mark.slow
def test_online_trainer_swaps_weights_into_a_serving_predictor(world):
    model = make_model(world)
    batch, _ = world.batch(64, seed=0)
    model.fit_input_stats(batch)
    predictor = Predictor.from_model(model)
    probe, _ = world.batch(4, seed=99)
    before = predictor(probe).embeddings
    cfg = config(batch_size=16, min_replay=16, replay_capacity=128, swap_period_s=0.2)
    trainer = OnlineTrainer(model, PairwiseInfoNCE(), cfg, publish=predictor.swap_weights)
    served, errors = [], []
    stop = threading.Event()

    def serve():  # the inference loop the node runs; it must never fail or stall on a swap
        while not stop.is_set():
            try:
                served.append(predictor(probe).embeddings)
            except Exception as exc:  # any failure is the finding
                errors.append(exc)

    server = threading.Thread(target=serve)
    server.start()
    trainer.start()
    for s in range(8):
        trainer.add(world.batch(16, seed=100 + s)[0])
    deadline = time.monotonic() + 60
    while predictor.swaps < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    trainer.stop()
    stop.set()
    server.join()
    assert not errors
    assert trainer.steps > 0 and predictor.swaps >= 2 and trainer.published >= 2
    assert len(served) > 0
    after = predictor(probe).embeddings
    assert not torch.allclose(before, after)
    # the predictor now serves exactly the trainer's weights
    with torch.no_grad():
        expected = trainer.model.eval()(probe.inputs, probe.mask).embeddings
    assert torch.allclose(after, expected, atol=1e-6)
    assert not torch.allclose(model(probe.inputs, probe.mask).embeddings, after), "caller's model untouched"
