"""The live perception path without ROS: a recorded episode replayed message by message."""

import os
import signal
import time
from collections import Counter

import numpy as np
import pytest
import torch

from structalign_ros.core.config_io import from_dict, to_dict
from structalign_ros.core.learn.train import load_checkpoint
from structalign_ros.core.serve import perception
from structalign_ros.core.serve.perception import ModelMismatch, PerceptionPipeline, check_model


def replay(pipeline, world, alter=None, truth=True):
    """The episode fed in bag order (with its ground-truth poses when ``truth``); returns the outputs."""
    return perception.replay(pipeline, [world.bag], world.config.ground_truth_topic if truth else "", alter)


@pytest.fixture
def pipeline(small_world):
    torch.set_num_threads(1)
    ckpt = load_checkpoint(small_world.checkpoint)
    return PerceptionPipeline(small_world.config, ckpt, warn=lambda m: None)


def test_every_window_gets_an_output_stamped_with_its_pivot(pipeline, small_world):
    outputs = replay(pipeline, small_world)
    assert len(outputs) == pipeline.windows > 60  # 3 s at 30 Hz, minus the last pending ones
    stamps = [o.stamp_ns for o in outputs]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    for o in outputs:
        assert o.embeddings.shape == (6, 16) and o.fused.shape == (16,)
        assert abs(float(np.linalg.norm(o.quaternion)) - 1.0) < 1e-6
        present = o.mask
        assert np.isclose(o.weights[present].sum(), 1.0, atol=1e-5) and np.all(o.weights[~present] == 0)
        assert np.all(o.embeddings[~present] == 0)
    labelled = [o for o in outputs if o.pose_error is not None]
    assert len(labelled) > 0.9 * len(outputs)  # ground truth at 100 Hz is within 20 ms of every pivot
    assert all(np.isfinite(o.pose_error).all() for o in labelled)
    report = pipeline.report()
    assert report["outputs"] == len(outputs) and report["latency_ms"]["inference"]["p50"] > 0


def test_malformed_messages_are_counted_and_dropped(pipeline, small_world):
    seen = Counter()

    def corrupt(kind, msg):
        # every 50th wrench gets a NaN, every 10th camera frame a wrong encoding, one IMU a zero stamp
        seen[kind] += 1
        if kind == "wrench" and seen[kind] % 50 == 0:
            msg.wrench.force.x = float("nan")
        if kind == "image" and seen[kind] % 10 == 3:
            msg.encoding = "yuv422"
        if kind == "imu" and seen[kind] == 7:
            msg.header.stamp.sec, msg.header.stamp.nanosec = 0, 0
        return msg

    outputs = replay(pipeline, small_world, corrupt)
    events = pipeline.report()["events"]
    assert any(k.startswith("wrench: wrench has 1 NaN") for k in events)
    assert any(k.startswith("imu: stamp is zero") for k in events)
    assert events[
        "rgb: camera image encoding 'yuv422' is not one of ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8')"
    ] == seen["image"] // 10 + (seen["image"] % 10 >= 3)
    assert len(outputs) > 50  # the node carries on


def test_a_silent_sensor_is_masked_and_recovers(pipeline, small_world):
    stamps = {}

    def silence_wrench(kind, msg):
        t = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        stamps.setdefault("t0", t)
        return None if kind == "wrench" and 1.0 <= t - stamps["t0"] < 2.0 else msg

    outputs = replay(pipeline, small_world, silence_wrench)
    col = outputs[0].modalities.index("wrench")
    t0 = stamps["t0"]
    rel = np.array([o.stamp_ns * 1e-9 - t0 for o in outputs])
    present = np.array([o.mask[col] for o in outputs])
    weights = np.array([o.weights for o in outputs])
    silent = (rel >= 1.0 + 0.1 + 0.001) & (rel < 2.0)  # windows whose whole span is in the silence
    assert silent.sum() > 20 and not present[silent].any()
    # masked from the first window whose span reaches into the silence: within 2 windows of it
    first_gap = int(np.argmax(rel >= 1.0))
    assert not present[first_gap : first_gap + 2].all()
    assert np.allclose(weights[silent].sum(1), 1.0, atol=1e-5)  # lambda renormalised over the others
    assert present[rel > 2.2].all()  # and back once the sensor is


def test_fine_tuning_swaps_weights_without_stopping_inference(pipeline, small_world, tmp_path):
    pipeline.start_finetuning()
    try:
        outputs = replay(pipeline, small_world)
        deadline = time.monotonic() + 30
        while pipeline.model_version < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pipeline.model_version >= 1
        assert pipeline.report()["finetune"]["steps"] >= 1
        assert pipeline.save(tmp_path / "last.pt")
    finally:
        pipeline.close()
    assert len(outputs) == pipeline.windows
    reloaded = load_checkpoint(tmp_path / "last.pt")
    assert reloaded.step >= 1
    changed = [k for k, v in reloaded.state.items() if not torch.equal(v, pipeline.model.state_dict()[k])]
    assert changed  # the checkpoint holds the fine-tuned weights, not the start


def test_configured_modalities_must_fit_the_model(small_world):
    ckpt = load_checkpoint(small_world.checkpoint)
    data = to_dict(small_world.config)
    data["modalities"]["wrench"]["samples"] = 8
    with pytest.raises(ModelMismatch, match="wrench: samples=8 but the model was trained with 32"):
        check_model(from_dict(data), ckpt.specs)
    data = to_dict(small_world.config)
    data["modalities"]["extra"] = {"kind": "imu", "topic": "/imu2", "rate_hz": 100.0, "samples": 4}
    with pytest.raises(ModelMismatch, match="the model has no 'extra' input"):
        check_model(from_dict(data), ckpt.specs)
    # a model modality the robot does not have is fed as missing
    data = to_dict(small_world.config)
    data["modalities"]["tactile"]["enabled"] = False
    check_model(from_dict(data), ckpt.specs)


def test_camera_and_depth_frames_of_another_size_are_resized_to_the_model(pipeline, small_world):
    """Every frame doubled in size (each pixel a 2x2 block): resized back, the outputs are the same."""
    from structalign_ros.core.data.bags import image_msg
    from structalign_ros.core.data.convert import image_pixels, stamp_ns
    from structalign_ros.core.learn.train import load_checkpoint as load

    def doubled(kind, msg):
        if kind in ("image", "depth"):
            big = image_pixels(msg).repeat(2, axis=0).repeat(2, axis=1)
            new = image_msg(stamp_ns(msg.header), msg.header.frame_id, big, msg.encoding)
            msg.height, msg.width, msg.step, msg.data = new.height, new.width, new.step, new.data
        return msg

    reference = replay(pipeline, small_world)
    resized = replay(
        PerceptionPipeline(small_world.config, load(small_world.checkpoint)), small_world, doubled
    )
    assert len(resized) == len(reference) > 60
    for a, b in zip(reference, resized, strict=True):
        assert a.stamp_ns == b.stamp_ns and np.array_equal(a.mask, b.mask)
        np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5)


def test_a_disabled_modality_is_fed_as_missing(small_world):
    data = to_dict(small_world.config)
    data["modalities"]["tactile"]["enabled"] = False
    config = from_dict(data)
    pipeline = PerceptionPipeline(config, load_checkpoint(small_world.checkpoint), warn=lambda m: None)
    outputs = replay(pipeline, small_world)
    col = outputs[0].modalities.index("tactile")
    assert outputs and not any(o.mask[col] for o in outputs)
    assert all(o.weights[col] == 0 for o in outputs)


def test_with_a_ground_truth_topic_only_labelled_windows_reach_the_trainer(small_world):
    config = from_dict({**to_dict(small_world.config), "ground_truth_topic": "/ee_truth"})
    pipeline = PerceptionPipeline(config, load_checkpoint(small_world.checkpoint), warn=lambda m: None)
    pipeline.start_finetuning()
    try:
        # no ground truth arrived: every window is unlabelled, and one unlabelled row in a sampled batch
        # would switch the pose loss off for the whole step
        unlabelled = replay(pipeline, small_world, truth=False)
        assert unlabelled and pipeline.report()["finetune"]["sent"] == 0
        labelled = replay(pipeline, small_world)
        assert labelled and pipeline.report()["finetune"]["sent"] >= len(labelled) - 5
    finally:
        pipeline.close()


@pytest.mark.slow
def test_a_starved_trainer_is_reported_and_the_report_clears_when_it_steps_again(small_world):
    config = from_dict({**to_dict(small_world.config), "node": {"stall_warn_s": 1.0}})
    pipeline = PerceptionPipeline(config, load_checkpoint(small_world.checkpoint), warn=lambda m: None)

    def finetune():
        return pipeline.report()["finetune"]

    def wait_for(condition, timeout=30.0):
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)
        return condition()

    pipeline.start_finetuning()
    child = pipeline.trainer._process.pid
    try:
        time.sleep(1.5)  # longer than stall_warn_s, but no window yet: waiting for data is no stall
        assert finetune()["warning"] == "" and finetune()["since_step_s"] > 1.0
        replay(pipeline, small_world)
        assert wait_for(lambda: finetune()["steps"] >= 1)
        assert finetune()["warning"] == ""
        os.kill(child, signal.SIGSTOP)  # alive, but it gets no CPU: what a saturated machine does to it
        assert wait_for(lambda: finetune()["warning"] != "", 10.0)
        stalled = finetune()
        assert stalled["warning"].startswith("no fine-tuning step for") and stalled["since_step_s"] > 1.0
        assert stalled["running"] and not stalled["error"]
        os.kill(child, signal.SIGCONT)
        assert wait_for(lambda: finetune()["steps"] > stalled["steps"] and finetune()["warning"] == "")
        pipeline.pause_finetuning()
        assert finetune()["since_step_s"] == 0.0 and finetune()["warning"] == ""  # paused: not a stall
    finally:
        os.kill(child, signal.SIGCONT)
        pipeline.close()


def test_fine_tuning_without_the_configured_ground_truth_warns_and_names_the_topic(small_world):
    config = from_dict({**to_dict(small_world.config), "node": {"stall_warn_s": 0.5}})
    assert config.ground_truth_topic
    pipeline = PerceptionPipeline(config, load_checkpoint(small_world.checkpoint), warn=lambda m: None)
    pipeline.start_finetuning()
    try:
        replay(pipeline, small_world, truth=False)  # the topic is configured, but nothing comes on it
        deadline = time.monotonic() + 30.0
        while not pipeline.report()["finetune"]["warning"] and time.monotonic() < deadline:
            time.sleep(0.05)
        report = pipeline.report()["finetune"]
        assert report["warning"].startswith(f"no ground truth on {config.ground_truth_topic} for")
        assert report["sent"] == 0  # no unlabelled window went to the trainer
    finally:
        pipeline.close()


def test_the_inference_queue_drops_windows_that_waited_too_long_and_counts_them():
    from structalign_ros.core.serve.telemetry import Events, Latencies

    now = [0]
    events, latency = Events(), Latencies()
    queued = perception.InferenceQueue(events, latency, max_wait_s=0.5, capacity=3, clock=lambda: now[0])
    queued.put("a")
    now[0] = 400_000_000  # "a" waited 0.4 s: served
    queued.put("b")
    queued.put("c")
    assert queued.get() == "a"
    now[0] = 950_000_000  # "b" waited 0.55 s: dropped; "c" the same; "d" is fresh
    queued.put("d")
    assert queued.get() == "d"
    assert events.counts[perception.BEHIND] == 2
    assert list(latency.samples("queue")) == [400.0, 550.0, 550.0, 0.0]
    # beyond the capacity the oldest goes, whatever its age
    for w in "efgh":
        queued.put(w)
    queued.close()
    assert [queued.get(), queued.get(), queued.get(), queued.get()] == ["f", "g", "h", None]
    assert events.counts[perception.BEHIND] == 3
