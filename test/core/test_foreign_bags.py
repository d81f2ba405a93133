"""Bags that are not the simulator's, as a user's first bags are: real rosbag2 files written here,
read back by the real CLI (``python -m structalign_ros.cli``, so the exit code and stderr are the
ones a user sees).

- sensor topics plus the end-effector pose only (no object-pose topic, as a real robot records):
  ``bag-info`` and ``eval`` work, the object track is simply empty;
- none of the configured topics: every command that reads bags with a configuration says which
  topics the bag has and which it expected, exits 1, no traceback;
- some sensor topics missing: training refuses with the same kind of message.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from structalign_ros.core.data.bags import (
    BagTopicError,
    BagWriter,
    iter_messages,
    iter_samples,
    wrench_msg,
)
from structalign_ros.core.data.dataset import WindowDataset, iter_windows, object_track


def copy_bag(source: Path, out: Path, keep) -> Path:
    """``source`` rewritten to ``out`` with only the topics ``keep(topic)`` accepts."""
    with BagWriter(out, "mcap") as writer:
        for topic, receive_ns, msg in iter_messages([source], _topics(source)):
            if keep(topic):
                writer.write(topic, msg, receive_ns)
    return out


def _topics(path: Path) -> list[str]:
    from structalign_ros.core.data.bags import bag_info

    return list(bag_info(path).topics)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "structalign_ros.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def no_object_bag(small_world, tmp_path_factory) -> Path:
    object_topic = small_world.config.sim.object_pose_topic
    out = tmp_path_factory.mktemp("foreign") / "no_object"
    return copy_bag(small_world.bag, out, lambda topic: topic != object_topic)


@pytest.fixture(scope="module")
def unrelated_bag(tmp_path_factory) -> Path:
    """A bag of other people's topic names only."""
    out = tmp_path_factory.mktemp("foreign") / "unrelated"
    with BagWriter(out, "mcap") as writer:
        for i in range(50):
            stamp = (i + 1) * 1_000_000
            writer.write("/robot/ft_sensor/raw", wrench_msg(stamp, "ft", np.zeros(6)), stamp)
    return out


def test_a_bag_without_the_object_pose_reads_with_an_empty_track(small_world, no_object_bag):
    config = small_world.config
    assert config.sim.object_pose_topic not in _topics(no_object_bag)
    stamps, xyz = object_track(no_object_bag, config)
    assert stamps.shape == (0,) and xyz.shape == (0, 3)
    # the windows and their ground-truth EE poses are all still there
    full = [(w.stamp_ns, p is None) for w, p in iter_windows([small_world.bag], config)]
    part = [(w.stamp_ns, p is None) for w, p in iter_windows([no_object_bag], config)]
    assert part == full and not all(unlabelled for _, unlabelled in part)


def test_eval_on_a_bag_without_the_object_pose(small_world, no_object_bag, tmp_path):
    out = tmp_path / "eval"
    proc = cli(
        "eval", "--bags", str(no_object_bag), "--model", str(small_world.checkpoint),
        "--out", str(out), "--no-plots", "--set", "train.threads=1", "--max-windows", "32",
        "--geometry-windows", "16",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads((out / "eval.json").read_text())
    assert report["windows"] > 0 and report["pose"]["n"] > 0


def test_a_bag_of_none_of_the_topics_yields_a_clear_error_not_every_message(small_world, unrelated_bag):
    config = small_world.config
    # rosbags reads every connection when given none: nothing of this bag may come out as a sample
    with pytest.raises(BagTopicError) as caught:
        list(iter_samples([unrelated_bag], config.modalities))
    text = str(caught.value)
    assert "/robot/ft_sensor/raw (geometry_msgs/msg/WrenchStamped)" in text
    assert all(m.topic in text for m in config.modalities.values() if m.enabled)
    # a bag without the one optional topic asked for yields nothing (not the bag's other messages)
    assert list(iter_samples([unrelated_bag], {}, pose_topic=config.sim.object_pose_topic)) == []
    assert list(iter_messages([unrelated_bag], ["/elsewhere"])) == []


@pytest.mark.parametrize("command", ["bag-info", "eval", "train"])
def test_every_command_explains_a_bag_of_none_of_the_topics(small_world, unrelated_bag, tmp_path, command):
    bag, model = str(unrelated_bag), str(small_world.checkpoint)
    args = {
        "bag-info": ["bag-info", bag, "--config", str(small_world.params)],
        "eval": ["eval", "--bags", bag, "--model", model, "--out", str(tmp_path / "e"), "--no-plots"],
        "train": ["train", "--bags", bag, "--config", str(small_world.params), "--steps", "1",
                  "--out", str(tmp_path / "t"), "--quiet", "--no-export"],
    }[command]  # fmt: skip
    proc = cli(*args)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    message = proc.stderr.strip()
    assert message.startswith(f"structalign {command}: ") and "\n" not in message, message
    assert "/robot/ft_sensor/raw" in message  # what the bag has
    assert small_world.config.modalities["rgb"].topic in message  # what was expected


def test_training_refuses_a_bag_missing_a_sensor_topic(small_world, tmp_path):
    tactile = small_world.config.modalities["tactile"].topic
    bag = copy_bag(small_world.bag, tmp_path / "no_tactile", lambda topic: topic != tactile)
    with pytest.raises(BagTopicError, match=f"lacks the configured topic\\(s\\) {tactile}"):
        WindowDataset([bag], small_world.config)
    proc = cli(
        "train", "--bags", str(bag), "--config", str(small_world.params), "--steps", "1",
        "--out", str(tmp_path / "t"), "--quiet", "--no-export",
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert tactile in proc.stderr and small_world.config.modalities["rgb"].topic in proc.stderr


def test_eval_shows_the_baselines_on_a_bag_of_sensor_topics_and_an_ee_pose_only(
    small_world, no_object_bag, tmp_path
):
    out = tmp_path / "eval"
    proc = cli(
        "eval", "--bags", str(no_object_bag), "--train-bags", str(small_world.bag),
        "--model", str(small_world.checkpoint), "--out", str(out), "--no-plots", "--set", "train.threads=1",
        "--max-windows", "32", "--geometry-windows", "16",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    quality = json.loads((out / "eval.json").read_text())["quality"]
    modalities = small_world.config.enabled_modalities
    assert list(quality) == ["all"] + [f"{op}{n}" for n in modalities for op in ("-", "~")]
    assert set(quality["all"]["baselines"]) == {
        "mean",
        "ridge_joints",
        "mlp_joints",
        "mlp_raw",
        "mlp_raw_nojoints",
    }
    assert "ridge_joints" not in quality["-joints"]["baselines"]
    # fitted on the same episode's windows, the joint ridge regression beats the training mean
    assert quality["all"]["baselines"]["ridge_joints"]["mm"] < quality["all"]["baselines"]["mean"]["mm"]
    assert "EE pose error, mm / deg (same windows)" in proc.stdout and "-joints" in proc.stdout
