"""The simulated robot: determinism per seed and physical sanity of its sensors."""

from collections import defaultdict

import numpy as np
import pytest

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.sim.controller import SETTLE_S
from structalign_ros.core.sim.robot import SimRobot
from structalign_ros.core.sim.scene import TOOL_MASS

G = 9.81


def readings(seed: int, seconds: float, render: bool, cfg=None):
    robot = SimRobot(cfg or StructAlignConfig(), seed, render=render)
    try:
        out = defaultdict(list)
        for r in robot.run(seconds):
            out[r.kind].append(r)
        return robot, out
    finally:
        robot.close()


def rotation(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a unit quaternion ``w x y z``."""
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


@pytest.fixture(scope="module")
def episode():
    """Ten seconds without rendering: two press-and-push cycles."""
    robot, out = readings(seed=0, seconds=10.0, render=False)
    ee = {r.stamp_ns: r.value for r in out["ee_pose"]}
    wrench = {r.stamp_ns: r.value for r in out["wrench"]}
    tactile = {r.stamp_ns: float(r.value.sum()) for r in out["tactile"]}
    stamps = sorted(set(ee) & set(tactile))
    # World-frame force on the tool from the wrist, at the stamps every stream shares (100 Hz).
    force_w = np.array([rotation(ee[t][3:]) @ wrench[t][:3] for t in stamps])
    times = np.array(stamps) / 1e9
    pos = np.array([ee[t][:3] for t in stamps])
    speed = np.r_[0.0, np.linalg.norm(np.diff(pos, axis=0), axis=1) * 100.0]
    tac = np.array([tactile[t] for t in stamps])
    return robot, out, force_w, speed, tac, times


def test_same_seed_same_episode_other_seed_differs():
    _, a = readings(7, 0.3, render=True)
    _, b = readings(7, 0.3, render=True)
    _, c = readings(8, 0.3, render=False)
    assert a.keys() == b.keys()
    for kind in a:
        assert len(a[kind]) == len(b[kind])
        for x, y in zip(a[kind], b[kind], strict=True):
            assert x.stamp_ns == y.stamp_ns
            np.testing.assert_array_equal(x.value, y.value, err_msg=kind)
    assert not np.array_equal(a["wrench"][-1].value, c["wrench"][-1].value)
    assert a["image"][0].value.shape == (128, 128, 3) and a["image"][0].value.dtype == np.uint8
    assert a["image"][0].value.std() > 10, "the rendered frame must show a scene, not a flat colour"


def test_objects_vary_per_seed():
    objs = {SimRobot(StructAlignConfig(), s, render=False).object for s in range(4)}
    assert len({o.mass for o in objs}) == 4 and len({o.friction for o in objs}) == 4
    assert len({o.half_size for o in objs}) == 4


def test_sensor_rates_follow_the_config():
    cfg = StructAlignConfig()
    cfg.modalities["joints"].rate_hz = 500.0
    _, out = readings(1, 0.5, render=False, cfg=cfg)
    counts = {k: len(v) for k, v in out.items()}
    assert counts == {
        "wrench": 500,
        "imu": 100,
        "tactile": 50,
        "joints": 250,
        "ee_pose": 50,
        "object_pose": 50,
    }
    stamps = np.diff([r.stamp_ns for r in out["joints"]])
    assert set(stamps.tolist()) == {2_000_000}


def test_static_ft_reads_the_tool_weight(episode):
    _, _, force_w, speed, tac, times = episode
    # The episode starts with the arm holding still (after the first 0.2 s of servo settling).
    still = (times > 0.2) & (times < SETTLE_S)
    assert speed[still].max() < 0.005 and tac[still].max() < 0.3
    median = np.median(force_w[still], axis=0)
    # The wrist holds the tool up: +m g on world z, nothing sideways (bias and noise allowed).
    assert abs(median[2] - TOOL_MASS * G) < 0.6, median
    assert np.hypot(median[0], median[1]) < 0.6, median


def test_contact_shows_on_tactile_and_ft_together(episode):
    _, _, force_w, _, tac, _ = episode
    pressing = tac > 3.0
    assert pressing.sum() >= 20, "the episode must contain presses"
    # The pad pressing down is pushed up by the box: the wrist then carries less than the weight.
    relief = TOOL_MASS * G - force_w[pressing, 2]
    assert np.corrcoef(tac[pressing], relief)[0, 1] > 0.8
    assert 0.7 < np.median(relief / tac[pressing]) < 1.4
    # And without any force there is no touch.
    free = np.linalg.norm(force_w - [0, 0, TOOL_MASS * G], axis=1) < 0.5
    assert free.any() and tac[free].max() < 1.0


def test_imu_accelerometer_includes_gravity(episode):
    _, out, _, _, _, _ = episode
    imu = np.array([r.value for r in out["imu"]])
    # Averaged over whole cycles the arm's own accelerations cancel; the IMU's z is up.
    np.testing.assert_allclose(imu[:, :3].mean(axis=0), [0, 0, G], atol=0.3)
    np.testing.assert_allclose(np.linalg.norm(imu[:, 6:10], axis=1), 1.0, atol=1e-9)


def test_the_box_gets_pushed(episode):
    robot, out, _, _, _, _ = episode
    start = out["object_pose"][0].value[:3]
    moved = max(np.linalg.norm(r.value[:2] - start[:2]) for r in out["object_pose"])
    assert moved > 0.02
    assert abs(out["object_pose"][-1].value[2] - robot.object.half_size[2]) < 0.005, "the box stays upright"


def test_joint_states_and_ground_truth_agree(episode):
    _, out, _, _, _, _ = episode
    j = np.array([r.value for r in out["joints"]])
    assert j.shape[1:] == (3, 4)
    # Effort is the servo torque: the wrist servo carries the tool's weight torque, so it is not zero.
    assert np.abs(j[:, 2]).mean(axis=0).min() > 0.01
    ee = np.array([r.value[:3] for r in out["ee_pose"]])
    assert ee[:, 2].min() > -0.005 and ee[:, 2].max() < 0.35, "the pad stays above the floor, in reach"
