"""Windows -> batch: the one function (``batch.to_batch``) that the live pipeline, the bag dataset, the
replay buffer and the experiments share, and what it buys: a bag of another camera resolution than
the checkpoint's trains and evaluates offline, live and offline batch a window alike, warm-up windows
included, and a batch in another modality order is refused."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from structalign_ros.cli import main
from structalign_ros.core.config_io import from_dict, to_dict
from structalign_ros.core.data.bags import BagWriter, bag_info, iter_messages
from structalign_ros.core.data.batch import Batch, ModalitySpec, to_batch
from structalign_ros.core.data.convert import stamp_ns
from structalign_ros.core.data.dataset import (
    ReplayReport,
    WindowDataset,
    data_loader,
    iter_windows,
    labelled_batch,
)
from structalign_ros.core.learn.objectives import PairwiseInfoNCE
from structalign_ros.core.learn.train import Trainer, evaluate, load_checkpoint, make_optimizer, train_step
from structalign_ros.core.serve import perception
from structalign_ros.core.serve.perception import PerceptionPipeline

LATE_S = 0.5  # the wrench stream of the foreign bag starts this late


class _W:
    def __init__(self, stamp, data, mask):
        self.stamp_ns, self.data, self.mask = stamp, data, mask


LAYOUT = {
    "rgb": ModalitySpec("image", (1, 4, 4, 3)),
    "depth": ModalitySpec("depth", (1, 4, 4)),
    "imu": ModalitySpec("imu", (4, 6)),
}


def test_windows_are_batched_in_the_layouts_order_with_what_is_missing_zeroed_and_masked():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (1, 4, 4, 3), dtype=np.uint8)
    depth = rng.random((1, 4, 4), dtype=np.float32)
    wins = [
        # the window's own order differs from the layout's; a modality the layout lacks is left out
        _W(1, {"imu": np.full((4, 6), 1, np.float32), "depth": depth, "rgb": rgb, "extra": np.ones(3)},
           {"imu": True, "depth": True, "rgb": True, "extra": True}),
        # no depth at all; the IMU masked (its zeros stay zeros)
        _W(2, {"imu": np.full((4, 6), 2, np.float32), "rgb": rgb}, {"imu": False, "rgb": True}),
        # warm-up: the IMU has not delivered yet, so its part has no shape
        _W(3, {"imu": np.zeros((4, 0), np.float32), "depth": depth, "rgb": rgb},
           {"imu": False, "depth": True, "rgb": True}),
    ]  # fmt: skip
    batch = to_batch(wins, LAYOUT, [np.arange(7.0), np.arange(7.0), np.arange(7.0)])
    assert batch.modalities == ("rgb", "depth", "imu") and len(batch) == 3
    assert batch.mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    assert batch.inputs["rgb"].dtype == torch.uint8 and batch.inputs["imu"].dtype == torch.float32
    assert batch.inputs["imu"][0].eq(1).all() and not batch.inputs["imu"][1:].any()
    assert not batch.inputs["depth"][1].any()
    assert torch.equal(batch.inputs["depth"][2], torch.from_numpy(depth))
    assert batch.stamps_ns.tolist() == [1, 2, 3]
    assert batch.pose.dtype == torch.float32 and batch.pose.shape == (3, 7)
    assert to_batch(wins, LAYOUT, [np.arange(7.0), None, np.arange(7.0)]).pose is None  # all or none
    with pytest.raises(ValueError, match="empty"):
        to_batch([], LAYOUT)
    with pytest.raises(ValueError, match="mask"):
        Batch(batch.inputs, batch.mask.int(), batch.modalities)


def test_frames_of_another_size_are_resized_area_for_colour_and_nearest_for_depth():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    depth = np.where(rng.random((1, 8, 8)) < 0.5, 0.4, 2.0).astype(np.float32)  # two depths, sharp edges
    batch = to_batch([_W(0, {"rgb": rgb, "depth": depth}, {"rgb": True, "depth": True})], LAYOUT)
    assert batch.inputs["rgb"].shape == (1, 1, 4, 4, 3) and batch.inputs["depth"].shape == (1, 1, 4, 4)
    blocks = rgb[0].reshape(4, 2, 4, 2, 3).astype(np.float64).mean((1, 3))  # each pixel a 2x2 mean
    assert np.abs(batch.inputs["rgb"][0, 0].numpy() - blocks).max() <= 0.5
    # never a blend of the two depths
    assert set(np.unique(batch.inputs["depth"].numpy())) <= {np.float32(0.4), np.float32(2.0)}
    expected = cv2.resize(depth[0], (4, 4), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(batch.inputs["depth"][0, 0].numpy(), expected)
    assert batch.mask.tolist() == [[True, True, False]] and not batch.inputs["imu"].any()  # no IMU: filled


def test_an_input_that_does_not_fit_even_resized_is_masked_with_the_reason_or_refused():
    wins = [_W(0, {"imu": np.ones((4, 9), np.float32), "rgb": np.zeros((1, 4, 4, 3), np.uint8)},
               {"imu": True, "rgb": True})]  # fmt: skip
    reasons: list[str] = []
    batch = to_batch(wins, LAYOUT, mismatch=reasons.append)
    assert batch.mask.tolist() == [[True, False, False]] and not batch.inputs["imu"].any()
    assert reasons == ["imu: window shape (4, 9) does not fit the model's (4, 6); masked"]
    with pytest.raises(ValueError, match="imu: window shape"):
        to_batch(wins, LAYOUT)


@pytest.fixture(scope="module")
def foreign_bag(small_world, tmp_path_factory):
    """An episode of the small world's robot at a camera resolution other than its checkpoint's (48 x 40
    against 32 x 32), whose F/T stream starts :data:`LATE_S` after the others (a sensor that comes up
    late: the first windows are warm-up windows)."""
    from structalign_ros.core.sim.record import record_episode

    root = tmp_path_factory.mktemp("foreign_resolution")
    recorded = root / "recorded"
    data = to_dict(small_world.config)  # the small world's robot and rates, another camera size
    data["sim"].update(width=48, height=40)
    record_episode(recorded, from_dict(data), seed=5, seconds=3.0)
    wrench = small_world.config.modalities["wrench"].topic
    start = None
    out = root / "episode"
    with BagWriter(out, "mcap") as writer:
        for topic, receive_ns, msg in iter_messages([recorded], list(bag_info(recorded).topics)):
            stamp = stamp_ns(msg.header)
            start = stamp if start is None else min(start, stamp)
            if topic != wrench or stamp >= start + LATE_S * 1e9:
                writer.write(topic, msg, receive_ns)
    return out


def test_live_and_offline_batch_the_same_window_alike_warm_up_windows_included(small_world, foreign_bag):
    ckpt = load_checkpoint(small_world.checkpoint)
    assert ckpt.specs["rgb"].shape == (1, 32, 32, 3)
    pipeline = PerceptionPipeline(small_world.config, ckpt, warn=lambda m: None)
    live: dict[int, Batch] = {}
    predict = pipeline.predictor
    pipeline.predictor = lambda batch: (live.setdefault(int(batch.stamps_ns[0]), batch), predict(batch))[1]
    outputs = perception.replay(pipeline, [foreign_bag], small_world.config.ground_truth_topic)

    report = ReplayReport()
    items = list(iter_windows([foreign_bag], small_world.config, report))
    assert report.warmup_windows > 0 and report.windows == len(items)  # yielded, not skipped
    offline = labelled_batch(items, ckpt.specs)
    assert offline.inputs["rgb"].shape[1:] == (1, 32, 32, 3)  # the checkpoint's layout, not the bag's

    # every window the live node published is one of the bag's, warm-up windows included
    assert len(outputs) == len(live) > 60 and set(live) <= set(offline.stamps_ns.tolist())
    col = list(ckpt.specs).index("wrench")
    warm = [o for o in outputs if o.stamp_ns < LATE_S * 1e9]
    assert warm and not any(o.mask[col] for o in warm)
    row = {s: i for i, s in enumerate(offline.stamps_ns.tolist())}
    for stamp, batch in live.items():
        i = row[stamp]
        assert batch.modalities == offline.modalities
        assert torch.equal(batch.mask[0], offline.mask[i]), stamp
        for name in batch.modalities:
            assert torch.equal(batch.inputs[name][0], offline.inputs[name][i]), (stamp, name)
        if batch.pose is not None:
            assert torch.equal(batch.pose[0], offline.pose[i])


def test_a_bag_of_another_camera_resolution_trains_and_evaluates_with_the_checkpoint(
    small_world, foreign_bag, tmp_path
):
    torch.manual_seed(0)
    ckpt = load_checkpoint(small_world.checkpoint)
    model = ckpt.build_model()
    loader = data_loader(WindowDataset([foreign_bag], small_world.config), 8, model.specs)
    batches = list(loader)[:3]
    assert all(b.inputs["rgb"].shape == (8, 1, 32, 32, 3) for b in batches)
    config = ckpt.config
    config.train.steps = 2
    trainer = Trainer(model, PairwiseInfoNCE(), config)
    trainer.fit(batches)
    assert trainer.step == 2
    assert np.isfinite(trainer.validate(batches[2:])["loss"])
    # the command, with the ONNX backend (whose graph has the checkpoint's frame size)
    out = tmp_path / "eval"
    args = ["eval", "--bags", str(foreign_bag), "--model", str(small_world.checkpoint), "--out", str(out)]
    assert main([*args, "--backend", "onnx", "--no-baselines", "--no-plots"]) == 0


def test_a_batch_in_another_modality_order_is_refused(small_world, foreign_bag):
    model = load_checkpoint(small_world.checkpoint).build_model()
    items = list(iter_windows([foreign_bag], small_world.config))[-8:]
    batch = labelled_batch(items, model.specs)
    objective = PairwiseInfoNCE()
    optimizer = make_optimizer(model, objective, small_world.config.train)
    reordered = dict(reversed(list(model.specs.items())))
    swapped = labelled_batch(items, reordered)
    assert swapped.modalities == tuple(reversed(model.modalities))
    with pytest.raises(ValueError, match="do not match the model"):
        train_step(model, swapped, optimizer, objective)
    with pytest.raises(ValueError, match="do not match the model"):
        evaluate(model, objective, [swapped])
    assert np.isfinite(train_step(model, batch, optimizer, objective)["loss"])
