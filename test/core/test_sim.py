"""The simulated robots: determinism per seed and physical sanity of their sensors, for each arm."""

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from structalign_ros.core.config import SIM_ROBOTS, ConfigError, SimConfig, StructAlignConfig
from structalign_ros.core.config_io import load_yaml
from structalign_ros.core.data.dataset import iter_windows
from structalign_ros.core.sim.controller import SETTLE_S, WRIST_AMPLITUDES
from structalign_ros.core.sim.record import record_episode
from structalign_ros.core.sim.robot import SimRobot
from structalign_ros.core.sim.scene import ARMS

G = 9.81
ARM6_FILE = Path(__file__).parents[2] / "config" / "sim_arm6.yaml"
# The default arm's end-effector pose (x y z, qw qx qy qz) at 2.501 s and 5.001 s of seed 0, computed
# with the code before a second arm existed: arm4 must keep producing exactly these episodes.
ARM4_EE_SEED0 = {
    2_501_000_000: [
        0.47590051828321184,
        -0.09191513674172201,
        0.07757382716238481,
        -0.008197481490724468,
        0.09524725122662667,
        0.9954195834814683,
        0.0007843803677660062,
    ],
    5_001_000_000: [
        0.4888594111652674,
        -0.09146766962760125,
        0.011190114424198386,
        -0.003992076916567888,
        0.09235028163320555,
        0.9957185102807117,
        0.0003702546691057504,
    ],
}


def robot_config(robot: str) -> StructAlignConfig:
    """The default configuration for ``robot``, its joint names included."""
    cfg = StructAlignConfig()
    cfg.sim.robot = robot
    cfg.modalities["joints"].joint_names = SIM_ROBOTS[robot]
    return cfg


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


@pytest.fixture(scope="module", params=sorted(ARMS))
def episode(request):
    """Ten seconds of each arm without rendering: two press-and-push cycles."""
    robot, out = readings(seed=0, seconds=10.0, render=False, cfg=robot_config(request.param))
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


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_same_seed_same_episode_other_seed_differs(arm):
    _, a = readings(7, 0.3, render=True, cfg=robot_config(arm))
    _, b = readings(7, 0.3, render=True, cfg=robot_config(arm))
    _, c = readings(8, 0.3, render=False, cfg=robot_config(arm))
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
    robot, _, force_w, speed, tac, times = episode
    # The episode starts with the arm holding still (after the first 0.2 s of servo settling).
    still = (times > 0.2) & (times < SETTLE_S)
    assert speed[still].max() < 0.005 and tac[still].max() < 0.3
    median = np.median(force_w[still], axis=0)
    # The wrist holds the tool up: +m g on world z, nothing sideways (bias and noise allowed).
    assert abs(median[2] - robot.arm.tool_mass * G) < 0.6, median
    assert np.hypot(median[0], median[1]) < 0.6, median


def test_contact_shows_on_tactile_and_ft_together(episode):
    robot, _, force_w, _, tac, _ = episode
    weight = robot.arm.tool_mass * G
    pressing = tac > 3.0
    assert pressing.sum() >= 20, "the episode must contain presses"
    # The pad pressing down is pushed up by the box: the wrist then carries less than the weight.
    relief = weight - force_w[pressing, 2]
    assert np.corrcoef(tac[pressing], relief)[0, 1] > 0.8
    assert 0.7 < np.median(relief / tac[pressing]) < 1.4
    # And without any force there is no touch.
    free = np.linalg.norm(force_w - [0, 0, weight], axis=1) < 0.5
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
    robot, out, _, _, _, _ = episode
    j = np.array([r.value for r in out["joints"]])
    assert j.shape[1:] == (3, len(SIM_ROBOTS[robot.arm.name].split(",")))
    # Effort is the servo torque: the wrist servo carries the tool's weight torque, so it is not zero.
    assert np.abs(j[:, 2]).mean(axis=0).min() > 0.01
    ee = np.array([r.value[:3] for r in out["ee_pose"]])
    assert ee[:, 2].min() > -0.005 and ee[:, 2].max() < 0.35, "the pad stays above the floor, in reach"


def test_the_default_arm_is_unchanged(episode):
    robot, out, _, _, _, _ = episode
    if robot.arm.name != "arm4":
        pytest.skip("reference values of the default arm")
    assert StructAlignConfig().sim.robot == "arm4"
    ee = {r.stamp_ns: r.value for r in out["ee_pose"]}
    for stamp, expected in ARM4_EE_SEED0.items():
        np.testing.assert_allclose(ee[stamp], expected, rtol=0, atol=1e-9)


def test_every_joint_moves_the_end_effector(episode):
    """Forward kinematics of the reported joint angles give the reported EE pose, and each joint
    changes that pose (position or orientation): a learner has to use them all."""
    import mujoco  # after core.sim, which chooses the GL backend

    robot, out, _, _, _, _ = episode
    m = robot.model
    d = mujoco.MjData(m)
    site = m.site("ee_site").id
    q_adr = [m.jnt_qposadr[m.joint(n).id] for n in robot.joints]

    def pose(q):
        d.qpos[q_adr] = q
        mujoco.mj_kinematics(m, d)
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, d.site_xmat[site])
        return d.site_xpos[site].copy(), quat

    ee = {r.stamp_ns: r.value for r in out["ee_pose"]}
    dt = 1.0 / robot.config.sim.physics_hz
    for r in out["joints"][::400]:
        if r.stamp_ns not in ee:
            continue
        # Poses (like every MuJoCo sensor) are computed before the step's integration, joint angles
        # after it: one step back is q - dt * v (semi-implicit Euler; v's noise is ~2 µrad per step).
        pos, quat = pose(r.value[0] - dt * r.value[1])
        np.testing.assert_allclose(pos, ee[r.stamp_ns][:3], atol=2e-5)  # encoder quantisation only
        assert abs(abs(np.dot(quat, ee[r.stamp_ns][3:])) - 1) < 1e-6
        for i in range(len(q_adr)):
            q = r.value[0].copy()
            q[i] += 0.02
            moved_pos, moved_quat = pose(q)
            turned = 2 * np.arccos(min(1.0, abs(float(np.dot(moved_quat, quat)))))
            assert np.linalg.norm(moved_pos - pos) > 1e-4 or turned > 0.01, robot.joints[i]


def test_the_second_arm_differs_and_moves_its_wrist(episode):
    robot, out, _, _, _, _ = episode
    if robot.arm.name == "arm4":
        pytest.skip("the second arm only")
    arm4, arm6 = ARMS["arm4"], robot.arm
    assert len(arm6.joints) == 6 and arm6.camera_pos != arm4.camera_pos
    assert (arm6.upper_arm, arm6.forearm, arm6.tool_length) != (
        arm4.upper_arm,
        arm4.forearm,
        arm4.tool_length,
    )
    q = np.array([r.value[0] for r in out["joints"]])
    # The scripted wrist yaw and tool roll really move (within their amplitudes), smoothly.
    for col, amplitude in zip((4, 5), WRIST_AMPLITUDES, strict=True):
        assert 0.2 * amplitude < np.ptp(q[:, col]) < 2.2 * amplitude
    assert np.abs(np.diff(q[:, 4:], axis=0)).max() < 0.01  # rad per 5 ms sample: no jumps


def test_joint_names_must_match_the_robot():
    cfg = StructAlignConfig()
    cfg.sim.robot = "arm6"  # joint names still the default arm's
    with pytest.raises(ConfigError, match=r"modalities\.joints\.joint_names.*sim\.robot='arm6'"):
        SimRobot(cfg, 0, render=False)
    with pytest.raises(ConfigError, match="robot='arm9'"):
        SimConfig(robot="arm9")


def test_second_robot_records_its_own_bag(tmp_path):
    """config/sim_arm6.yaml as a user runs it: its topics, rates and 6-joint windows."""
    cfg = load_yaml(ARM6_FILE)
    assert (
        cfg.sim.robot == "arm6"
        and cfg.modalities["wrench"].rate_hz != StructAlignConfig().modalities["wrench"].rate_hz
    )
    stats = record_episode(tmp_path / "arm6", cfg, seed=1, seconds=0.5)
    assert stats.messages > 0
    windows = [(w, pose) for w, pose in iter_windows([tmp_path / "arm6"], cfg)]
    assert len(windows) >= 10
    w, pose = windows[-1]
    assert all(w.mask.values()), w.mask
    assert w.data["joints"].shape == (cfg.modalities["joints"].samples, 3, 6)
    assert w.data["rgb"].shape == (1, cfg.sim.height, cfg.sim.width, 3)
    assert pose is not None and pose.shape == (7,)
