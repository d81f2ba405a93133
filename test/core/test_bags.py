"""rosbag2 round trips in both storages, checked by rosbags and by the independent mcap reader."""

import shutil
import tracemalloc
from collections import Counter

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.data.bags import (
    BagError,
    BagWriter,
    bag_info,
    image_msg,
    iter_messages,
    iter_samples,
    wrench_msg,
)
from structalign_ros.core.data.convert import convert
from structalign_ros.core.sim.record import record_episode

SECONDS = 0.5


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    """The same rendered episode recorded in both storages (32FC1 depth in the sqlite3 one)."""
    root = tmp_path_factory.mktemp("bags")
    cfg = StructAlignConfig()
    record_episode(root / "mcap", cfg, seed=3, seconds=SECONDS, storage="mcap")
    cfg32 = StructAlignConfig()
    cfg32.sim.depth_encoding = "32FC1"
    record_episode(root / "sqlite3", cfg32, seed=3, seconds=SECONDS, storage="sqlite3")
    return cfg, root


def expected_counts(cfg):
    steps = round(SECONDS * cfg.sim.physics_hz)
    counts = {m.topic: int(np.ceil(steps * m.rate_hz / cfg.sim.physics_hz)) for m in cfg.modalities.values()}
    gt = int(np.ceil(steps * cfg.sim.ground_truth_hz / cfg.sim.physics_hz))
    counts[cfg.ground_truth_topic] = counts[cfg.sim.object_pose_topic] = gt
    return counts


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_has_every_topic_with_standard_types(episodes, storage):
    cfg, root = episodes
    topics = bag_info(root / storage).topics
    assert {t: n for t, (_, n) in topics.items()} == expected_counts(cfg)
    assert topics["/wrist/wrench"][0] == "geometry_msgs/msg/WrenchStamped"
    assert topics["/ee/imu"][0] == "sensor_msgs/msg/Imu"
    assert topics["/joint_states"][0] == "sensor_msgs/msg/JointState"
    assert topics["/tactile/image"][0] == "sensor_msgs/msg/Image"
    assert topics[cfg.ground_truth_topic][0] == "geometry_msgs/msg/PoseStamped"


def test_storages_hold_the_same_samples(episodes):
    cfg, root = episodes
    a = list(iter_samples([root / "mcap"], cfg.modalities))
    b = list(iter_samples([root / "sqlite3"], cfg.modalities))
    assert len(a) == len(b) == sum(n for t, n in expected_counts(cfg).items() if "ground_truth" not in t)
    for (na, ta, va), (nb, tb, vb) in zip(a, b, strict=True):
        assert (na, ta) == (nb, tb)
        if na == "depth":  # 16UC1 millimetres against 32FC1 metres of the same frame
            np.testing.assert_allclose(va, vb, atol=0.0006)
        else:
            np.testing.assert_array_equal(va, vb)
    stamps = [t for _, t, _ in a]
    assert stamps == sorted(stamps), "a bag must stream in time order"


def test_independent_mcap_reader_decodes_the_same_messages(episodes):
    cfg, root = episodes
    by_topic = {m.topic: (name, m) for name, m in cfg.modalities.items()}
    ours = {(name, stamp): array for name, stamp, array in iter_samples([root / "mcap"], cfg.modalities)}
    theirs = {}
    with open(next((root / "mcap").glob("*.mcap")), "rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        for _, channel, message, ros_msg in reader.iter_decoded_messages():
            if channel.topic not in by_topic:
                continue
            name, mod = by_topic[channel.topic]
            # mcap_ros2 builds its own message classes from the schema text in the file; they share
            # the field names, so the same converter reads them.
            stamp, array = convert(mod.kind, ros_msg, mod.joint_list)
            assert message.log_time == stamp
            theirs[(name, stamp)] = array
    assert theirs.keys() == ours.keys()
    for key, array in ours.items():
        np.testing.assert_array_equal(theirs[key], array, err_msg=str(key))


def test_several_bags_in_sequence(episodes):
    _, root = episodes
    one = list(iter_messages([root / "mcap"], ["/wrist/wrench"]))
    two = list(iter_messages([root / "mcap", root / "sqlite3"], ["/wrist/wrench"]))
    assert len(two) == 2 * len(one)
    assert [t for _, t, _ in two[len(one) :]] == [t for _, t, _ in one]


def test_conversion_failures_are_counted_and_skipped(tmp_path):
    cfg = StructAlignConfig()
    with BagWriter(tmp_path / "bad", "mcap") as w:
        w.write("/wrist/wrench", wrench_msg(1000, "ft", np.zeros(6)), 1000)
        w.write("/wrist/wrench", wrench_msg(2000, "ft", np.array([np.nan, 0, 0, 0, 0, 0])), 2000)
        w.write("/camera/color/image_raw", image_msg(3000, "cam", np.zeros((2, 2), np.uint16), "16UC1"), 3000)
    dropped = Counter()
    out = list(iter_samples([tmp_path / "bad"], cfg.modalities, dropped))
    assert [(n, t) for n, t, _ in out] == [("wrench", 1000)]
    assert dropped["wrench: wrench has 1 NaN/Inf value(s)"] == 1
    assert [k for k in dropped if k.startswith("rgb: camera image encoding '16UC1'")]
    assert sum(dropped.values()) == 2


def test_corrupt_and_missing_bags_raise_bag_error(episodes, tmp_path):
    _, root = episodes
    with pytest.raises(BagError, match="cannot open"):
        list(iter_messages([tmp_path / "nothing"], ["/x"]))
    broken = tmp_path / "broken"
    shutil.copytree(root / "mcap", broken)
    data = next(broken.glob("*.mcap"))
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BagError):
        list(iter_messages([broken], ["/wrist/wrench", "/camera/color/image_raw"]))
    with pytest.raises(BagError, match="storage"):
        BagWriter(tmp_path / "x", "rosbag1")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_reading_streams_in_bounded_memory(tmp_path, storage):
    """Peak allocation while replaying a 40 MB bag stays a small fraction of it (no whole-bag load)."""
    frame = np.random.default_rng(0).integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    n = 200
    with BagWriter(tmp_path / "big", storage) as w:
        for i in range(n):
            stamp = (i + 1) * 33_000_000
            w.write("/camera/color/image_raw", image_msg(stamp, "cam", frame, "rgb8"), stamp)
    size = n * frame.nbytes
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_samples([tmp_path / "big"], StructAlignConfig().modalities))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert peak < size / 4, f"peak {peak / 1e6:.1f} MB while reading a {size / 1e6:.0f} MB bag"
