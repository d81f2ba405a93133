"""Training windows from real recorded bags: the replay pipeline, shuffling, workers, collation."""

import numpy as np
import pytest

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.data.dataset import (
    ReplayReport,
    WindowDataset,
    bag_layout,
    data_loader,
    iter_windows,
)
from structalign_ros.core.sim.record import record_episode


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    cfg = StructAlignConfig()
    paths = [root / f"ep{seed}" for seed in (0, 1)]
    for seed, path in zip((0, 1), paths, strict=True):
        record_episode(path, cfg, seed=seed, seconds=1.0, storage="mcap" if seed == 0 else "sqlite3")
    return cfg, paths


def test_replay_yields_complete_labelled_windows(bags):
    cfg, paths = bags
    report = ReplayReport()
    items = list(iter_windows(paths[:1], cfg, report))
    assert report.samples["rgb"] == 30 and report.samples["wrench"] == 1000 and report.samples["pose"] == 100
    assert report.windows == len(items) == 30 and report.warmup_windows == 0  # every stream from t = 0
    # The first 0.1 s of windows lack a full span; everything after is complete.
    assert report.complete_windows >= len(items) - 4
    late = [(w, p) for w, p in items if w.stamp_ns > 0.15e9]
    assert late and all(all(w.mask.values()) for w, _ in late)
    assert all(p is not None and p.shape == (7,) for _, p in late)
    w, _ = late[0]
    assert w.data["wrench"].shape == (32, 6) and w.data["tactile"].shape == (8, 4, 4)
    assert w.data["rgb"].shape == (1, 128, 128, 3) and w.data["joints"].shape == (16, 3, 4)
    assert w.counts["wrench"].sum() == 101  # 1 kHz over a closed 100 ms span
    assert not report.conversion_drops


def test_bags_are_separate_episodes(bags):
    cfg, paths = bags
    report = ReplayReport()
    stamps = [w.stamp_ns for w, _ in iter_windows(paths, cfg, report)]
    # Both bags start at t=0: the stamps restart instead of being treated as one jumping stream.
    assert len(report.assembler) == 2 and all(s.resets == 0 for s in report.assembler)
    restart = int(np.argmin(np.diff(stamps)))
    assert stamps[restart + 1] < stamps[restart]
    assert len(stamps) == 2 * len(list(iter_windows(paths[:1], cfg)))


def test_shuffle_buffer_reorders_but_keeps_every_window(bags):
    cfg, paths = bags
    ordered = [w.stamp_ns for w, _ in WindowDataset(paths, cfg, shuffle_buffer=1)]
    ds = WindowDataset(paths, cfg, shuffle_buffer=16, seed=3)
    first = [w.stamp_ns for w, _ in ds]
    assert sorted(first) == sorted(ordered) and first != ordered
    assert [w.stamp_ns for w, _ in ds] == first, "same seed and epoch, same order"
    ds.set_epoch(1)
    assert [w.stamp_ns for w, _ in ds] != first


def test_data_loader_with_workers_gives_batches(bags):
    cfg, paths = bags
    layout = bag_layout(paths, cfg)
    loader = data_loader(WindowDataset(paths, cfg, shuffle_buffer=8), 8, layout, workers=2)
    batches = list(loader)
    # Each worker replays one bag and drops its own last partial batch.
    assert len(batches) == sum(len(list(iter_windows([p], cfg))) // 8 for p in paths)
    b = batches[0]
    assert b.inputs["imu"].shape == (8, 16, 6) and b.mask.shape == (8, 6)
    assert b.pose is not None and b.pose.shape == (8, 7)
    assert b.modalities == tuple(cfg.enabled_modalities) == tuple(layout)
    assert layout["rgb"].shape == (1, 128, 128, 3) and layout["joints"].shape == (16, 3, 4)
