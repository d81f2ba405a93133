"""Offline training and evaluation: resume exactness, episode split, sharding, and the
``structalign train`` / ``structalign eval`` commands end to end on short simulated episodes."""

import csv
import json

import pytest
import torch

from structalign_ros.cli import main
from structalign_ros.core.config import ModelConfig, StructAlignConfig, TrainConfig
from structalign_ros.core.config_io import save_yaml
from structalign_ros.core.data.batch import ModalitySpec
from structalign_ros.core.data.dataset import WindowDataset, iter_windows, split_episodes
from structalign_ros.core.eval.synthetic import SyntheticWorld
from structalign_ros.core.learn.headfit import GATED
from structalign_ros.core.learn.models import MultimodalModel
from structalign_ros.core.learn.objectives import PairwiseInfoNCE
from structalign_ros.core.learn.train import Trainer, load_checkpoint, seed_everything

TINY = ModelConfig(embed_dim=16, width=8, image_size=16)


def _trainer(world, steps):
    seed_everything(0)
    config = StructAlignConfig()
    config.model = TINY
    config.train.head_steps = 20
    config.train = TrainConfig(batch_size=16, steps=steps, lr=1e-2)
    first, _ = world.batch(16, seed=0)
    model = MultimodalModel(ModalitySpec.from_batch(first, world.kinds), TINY)
    return Trainer(model, PairwiseInfoNCE(), config)


def test_resume_continues_exactly(tmp_path):
    world = SyntheticWorld(modalities=("rgb", "wrench", "imu"), image=16, steps=8)
    batches = [world.batch(16, seed=s)[0] for s in range(4)]
    straight = _trainer(world, 4)
    straight.fit(batches)

    first = _trainer(world, 2)
    first.fit(batches[:2])
    first.save(tmp_path)
    assert load_checkpoint(tmp_path / "last.pt").step == 2
    second = _trainer(world, 4)  # fresh weights and optimiser until resumed
    assert second.resume(tmp_path) and second.step == 2
    second.fit(batches[2:])
    assert second.step == 4
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[key], value, rtol=0, atol=1e-6)
    assert not Trainer.resume(_trainer(world, 1), tmp_path / "missing")


def test_validation_split_is_by_episode():
    bags = [f"ep{i}" for i in range(5)]
    train, val = split_episodes(bags, 0.2)
    assert [p.name for p in train] == ["ep0", "ep1", "ep2", "ep3"] and [p.name for p in val] == ["ep4"]
    assert split_episodes(bags[:2], 0.01)[1][0].name == "ep1"  # at least one held out
    assert split_episodes(bags[:1], 0.5) == ([train[0]], [])  # a single bag cannot be split
    assert split_episodes(bags, 0.0)[1] == []


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    paths = []
    for seed in (1, 2):
        out = root / f"ep{seed}"
        assert main(["sim", "--seconds", "2.5", "--seed", str(seed), "--out", str(out)]) == 0
        paths.append(str(out))
    config = StructAlignConfig()
    config.model = TINY
    config.train.head_steps = 20
    save_yaml(config, root / "tiny.yaml")
    return paths, str(root / "tiny.yaml")


def test_sharded_cached_dataset_splits_windows_between_ranks(episodes):
    paths, _ = episodes
    config = StructAlignConfig()
    stamps = [w.stamp_ns for w, _ in iter_windows(paths[:1], config)]
    shards = [WindowDataset(paths[:1], config, shard=(r, 2), cache=True) for r in range(2)]
    got = [sorted(w.stamp_ns for w, _ in ds) for ds in shards]
    assert sorted(got[0] + got[1]) == sorted(stamps) and not set(got[0]) & set(got[1])
    assert sorted(w.stamp_ns for w, _ in shards[0]) == got[0]  # the cached second pass


def test_train_resume_then_eval(episodes, tmp_path, capsys):
    paths, cfg = episodes
    run = tmp_path / "run"
    args = ["train", "--bags", *paths, "--config", cfg, "--objective", "pairwise", "--batch-size", "8"]
    args += ["--out", str(run), "--checkpoint-every", "2", "--quiet", "--pose-weight", "1"]
    args += ["--set", "train.threads=1", "--set", "runtime.device=cpu", "--set", "train.lr=5e-4"]
    assert main([*args, "--steps", "3"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["onnx_max_abs_diff"] < 1e-4
    assert "pose_pos_mae" in summary["val"]
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt.step == 3 and ckpt.config.objective.pose_weight == 1.0
    # --set keys are recorded with the rest of the tree, device and threads included
    assert (ckpt.config.train.threads, ckpt.config.runtime.device, ckpt.config.train.lr) == (1, "cpu", 5e-4)
    assert ckpt.config.train.checkpoint_dir == ""  # RUN is not baked into the shipped config
    assert (run / "model.onnx").stat().st_size > 0 and load_checkpoint(run / "model.pt").step == 3
    best = json.loads((run / "best.json").read_text())
    assert best["metric"] == "pose_pos_mm" and 1 <= best["step"] <= 3
    assert summary["head_fit"].startswith(("kept", "rejected")) and summary["best_step"] == best["step"]
    # the refit reports every expert's held-out R^2; a gated expert's calibration is GATED in model.pt
    delivered = load_checkpoint(run / "model.pt").build_model()
    assert set(summary["expert_r2"]) == set(delivered.modalities)
    for k, part in enumerate(("position", "rotation")):
        cal = dict(zip(delivered.modalities, delivered.pose_head.calibration[:, k].tolist(), strict=True))
        gated = {m for m, c in cal.items() if c >= GATED}
        assert gated == set(summary.get("experts_gated", {part: gated})[part])
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    assert main([*args, "--steps", "5", "--resume"]) == 0
    capsys.readouterr()
    assert load_checkpoint(run / "last.pt").step == 5
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    train_steps = sorted({int(r["step"]) for r in rows if r["split"] == "train"})
    assert train_steps == [1, 2, 3, 4, 5]  # the resumed run appended, no step twice
    assert any(r["split"] == "val" and r["metric"] == "loss" for r in rows)

    out = tmp_path / "eval"
    assert main(["eval", "--bags", *paths, "--model", str(run / "model.pt"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "EE pose: position" in text and "rgb->depth" in text
    report = json.loads((out / "eval.json").read_text())
    assert report["episodes"] == 2 and report["pose"]["n"] == report["windows"]
    assert len(report["retrieval"]) == 30 and len(report["geometry"]) == 15
    assert {p.name for p in out.glob("*.png")} == {"lambda.png", "alignment.png", "contact.png"}


def test_gw_regularizer_composes_with_contrastive_bases_only(episodes, tmp_path, capsys):
    paths, cfg = episodes
    base = ["train", "--bags", *paths, "--config", cfg, "--out", str(tmp_path / "r"), "--steps", "1"]
    assert main([*base, "--objective", "mover", "--gw-regularizer"]) == 2
    assert "own transport term" in capsys.readouterr().err
    assert main([*base, "--objective", "symile", "--gw-regularizer", "--batch-size", "8", "--quiet"]) == 0
    cfg_run = load_checkpoint(tmp_path / "r" / "last.pt").config.objective
    assert (cfg_run.name, cfg_run.base) == ("unioma", "symile")


def test_train_runs_a_prepare_hook_on_the_built_job_before_the_first_step(episodes, tmp_path, capsys):
    import argparse

    from structalign_ros.commands import train as train_cmd

    paths, cfg = episodes
    parser = argparse.ArgumentParser()
    train_cmd.configure(parser)
    argv = ["--bags", *paths, "--config", cfg, "--objective", "pairwise", "--gw-regularizer", "--steps", "2"]
    argv += ["--batch-size", "8", "--out", str(tmp_path / "r"), "--quiet", "--no-export"]
    args = parser.parse_args(argv)
    calls = []

    def prepare(job):
        kernels = job.trainer.objective.kernels
        assert job.trainer.step == 0

        def counted(batch, rows):
            calls.append(len(rows))
            return kernels(batch, rows)

        job.trainer.objective.kernels = counted

    summary = train_cmd.train(args, prepare)
    assert summary["steps"] == 2 and "onnx" not in summary
    assert len(calls) >= 2  # the swapped kernels are the ones the training steps used
