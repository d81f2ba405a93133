"""Message -> numpy conversion on real rosbags message objects, good and bad."""

import dataclasses

import numpy as np
import pytest

from structalign_ros.core.data.bags import image_msg, imu_msg, joint_state_msg, pose_msg, wrench_msg
from structalign_ros.core.data.convert import (
    ConversionError,
    convert,
    image_pixels,
    image_to_depth,
    image_to_rgb,
    image_to_tactile,
    imu_to_array,
    joints_to_array,
    pose_to_array,
    stamp_ns,
    wrench_to_array,
)

STAMP = 12_345_678_901
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def padded(msg, pad: int, bigendian: bool = False):
    """The same image with ``pad`` junk bytes after every row (and byte-swapped if asked)."""
    rows = np.frombuffer(msg.data.tobytes(), dtype=np.uint8).reshape(msg.height, msg.step)
    if bigendian:
        itemsize = {"mono16": 2, "16UC1": 2, "32FC1": 4}[msg.encoding]
        rows = rows.reshape(msg.height, -1, itemsize)[:, :, ::-1].reshape(msg.height, msg.step)
    junk = np.full((msg.height, pad), 0xAB, dtype=np.uint8)
    data = np.concatenate([rows, junk], axis=1).reshape(-1)
    return dataclasses.replace(msg, step=msg.step + pad, data=data, is_bigendian=int(bigendian))


def test_stamp_is_integer_nanoseconds():
    msg = wrench_msg(STAMP, "ft", np.zeros(6))
    assert stamp_ns(msg.header) == STAMP
    msg.header.stamp.nanosec = 1_000_000_000
    with pytest.raises(ConversionError, match="nanosec"):
        stamp_ns(msg.header)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 0, 0
    with pytest.raises(ConversionError, match="stamp is zero"):
        stamp_ns(msg.header)


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize(
    ("encoding", "make"),
    [
        ("rgb8", lambda a: a),
        ("bgr8", lambda a: a[:, :, ::-1]),
        ("rgba8", lambda a: np.dstack([a, np.full(a.shape[:2], 7, np.uint8)])),
        ("bgra8", lambda a: np.dstack([a[:, :, ::-1], np.full(a.shape[:2], 7, np.uint8)])),
    ],
)
def test_colour_encodings_give_rgb(encoding, make, pad):
    msg = padded(image_msg(STAMP, "cam", make(RGB), encoding), pad)
    stamp, rgb = image_to_rgb(msg)
    assert stamp == STAMP
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3)
    np.testing.assert_array_equal(rgb, RGB)


def test_mono8_is_replicated_to_rgb():
    mono = RGB[:, :, 0]
    _, rgb = image_to_rgb(padded(image_msg(STAMP, "cam", mono, "mono8"), 1))
    assert rgb.shape == (5, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], mono)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
def test_16bit_depth_is_millimetres(encoding, bigendian):
    mm = np.array([[0, 1, 1000], [65535, 250, 4096]], dtype=np.uint16)
    msg = padded(image_msg(STAMP, "depth", mm, encoding), 2, bigendian)
    _, metres = image_to_depth(msg)
    assert metres.dtype == np.float32
    np.testing.assert_allclose(metres, mm / 1000.0, rtol=1e-6)


@pytest.mark.parametrize("bigendian", [False, True])
def test_float_depth_maps_no_return_to_zero(bigendian):
    m = np.array([[0.5, np.nan, np.inf], [-np.inf, 2.25, 0.0]], dtype=np.float32)
    _, metres = image_to_depth(padded(image_msg(STAMP, "depth", m, "32FC1"), 4, bigendian))
    np.testing.assert_array_equal(metres, [[0.5, 0, 0], [0, 2.25, 0]])


def test_negative_depth_raises():
    m = np.array([[0.5, -0.1]], dtype=np.float32)
    with pytest.raises(ConversionError, match="negative"):
        image_to_depth(image_msg(STAMP, "depth", m, "32FC1"))


def test_tactile_grid_and_non_finite_taxel():
    grid = RNG.random((4, 4)).astype(np.float32)
    _, out = image_to_tactile(image_msg(STAMP, "pad", grid, "32FC1"))
    np.testing.assert_array_equal(out, grid)
    grid[1, 2] = np.nan
    with pytest.raises(ConversionError, match="1 NaN"):
        image_to_tactile(image_msg(STAMP, "pad", grid, "32FC1"))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"encoding": "yuv422"}, "unknown image encoding"),
        ({"step": 20}, "step=20 is smaller"),
        ({"height": 6}, "expected step\\*height"),
        ({"height": 0}, "empty image"),
        ({"data": np.zeros(0, np.uint8)}, "expected step\\*height"),
    ],
)
def test_bad_images_raise_with_reason(change, reason):
    msg = dataclasses.replace(image_msg(STAMP, "cam", RGB, "rgb8"), **change)
    with pytest.raises(ConversionError, match=reason):
        image_pixels(msg)


def test_wrong_kind_of_image_for_the_modality():
    depth = image_msg(STAMP, "d", np.zeros((2, 2), np.uint16), "16UC1")
    with pytest.raises(ConversionError, match="camera image encoding"):
        image_to_rgb(depth)
    with pytest.raises(ConversionError, match="depth image encoding"):
        image_to_depth(image_msg(STAMP, "c", RGB, "rgb8"))


def test_wrench_and_imu():
    w = np.arange(6, dtype=np.float64) - 2.5
    stamp, out = wrench_to_array(wrench_msg(STAMP, "ft", w))
    assert stamp == STAMP and out.dtype == np.float32
    np.testing.assert_array_equal(out, w)
    _, imu = imu_to_array(imu_msg(STAMP, "imu", [0.1, 0.2, 9.81], [1, 2, 3], [1, 0, 0, 0]))
    np.testing.assert_allclose(imu, [0.1, 0.2, 9.81, 1, 2, 3], rtol=1e-6)
    w[4] = np.inf
    with pytest.raises(ConversionError, match="wrench has 1 NaN/Inf"):
        wrench_to_array(wrench_msg(STAMP, "ft", w))
    with pytest.raises(ConversionError, match="imu has 1"):
        imu_to_array(imu_msg(STAMP, "imu", [np.nan, 0, 0], [0, 0, 0], [1, 0, 0, 0]))


def test_joints_are_reordered_by_name_and_extras_ignored():
    state = np.array([[1.0, 2.0, 3.0], [10, 20, 30], [100, 200, 300]])
    msg = joint_state_msg(STAMP, ["b", "gripper", "a"], state)
    _, out = joints_to_array(msg, ["a", "b"])
    np.testing.assert_array_equal(out, [[3, 1], [30, 10], [300, 100]])
    np.testing.assert_array_equal(convert("joints", msg, ["a", "b"])[1], out)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"effort": np.zeros(0)}, "effort has 0 value"),
        ({"velocity": np.zeros(3)}, "velocity has 3 value"),
        ({"name": ["a", "a"]}, "repeat"),
        ({"name": ["a", "c"]}, "missing"),
        ({"position": np.array([np.nan, 0.0])}, "NaN/Inf"),
    ],
)
def test_bad_joint_states_raise(change, reason):
    msg = joint_state_msg(STAMP, ["a", "b"], np.ones((3, 2)))
    with pytest.raises(ConversionError, match=reason):
        joints_to_array(dataclasses.replace(msg, **change), ["a", "b"])


def test_unknown_kind():
    with pytest.raises(ConversionError, match="no converter"):
        convert("lidar", None)


def test_pose_is_xyz_then_ros_quaternion_order():
    q = np.array([np.cos(0.3), 0, 0, np.sin(0.3)])  # w x y z, as MuJoCo gives it
    stamp, out = pose_to_array(pose_msg(STAMP, "base_link", [0.1, -0.2, 0.3], q))
    assert stamp == STAMP
    np.testing.assert_allclose(out, [0.1, -0.2, 0.3, 0, 0, np.sin(0.3), np.cos(0.3)], rtol=1e-6)
    with pytest.raises(ConversionError, match=r"norm 0\.0000"):
        pose_to_array(pose_msg(STAMP, "base_link", [0, 0, 0], [0, 0, 0, 0]))
