"""Sensor faults (core/sim/faults.py) and the simulator's domain shift: each fault changes what the
sensor reports in its own way, only between its start and stop, and clears when switched off."""

from __future__ import annotations

import numpy as np
import pytest

from structalign_ros.core.config import ConfigError, FaultConfig, ShiftConfig, StructAlignConfig
from structalign_ros.core.data.bags import image_msg, joint_state_msg, wrench_msg
from structalign_ros.core.data.convert import convert
from structalign_ros.core.sim.faults import FaultInjector, fault_message

MS = 1_000_000
START_S, STOP_S = 1.0, 2.0


def series(kind: str, n: int = 3000, period_ms: int = 1) -> list[tuple[int, np.ndarray]]:
    """A clean stream of ``kind`` readings (a slow sine per element plus noise), 1 kHz, 3 s."""
    rng = np.random.default_rng(1)
    shape = {"wrench": (6,), "imu": (10,), "tactile": (4, 4), "joints": (3, 6)}[kind]
    phase = rng.uniform(0, 6, shape)
    out = []
    for i in range(n):
        t = i * period_ms / 1e3
        v = np.sin(2 * np.pi * 5.0 * t + phase) + 0.1 * rng.standard_normal(shape)
        if kind == "imu":
            v[6:] = [1.0, 0.0, 0.0, 0.0]  # the orientation quaternion
        out.append(((i + 1) * period_ms * MS, v.astype(np.float32)))
    return out


def run(injector: FaultInjector, kind: str, stream):
    return [injector.apply(kind, stamp, value) for stamp, value in stream]


def phases(stream):
    t = np.array([s for s, _ in stream]) - stream[0][0]
    return t < START_S * 1e9, (t >= START_S * 1e9) & (t < STOP_S * 1e9), t >= STOP_S * 1e9


def fault(modality: str, kind: str, **kw) -> FaultConfig:
    return FaultConfig(modality=modality, kind=kind, start_s=START_S, stop_s=STOP_S, **kw)


@pytest.mark.parametrize("modality", ["wrench", "imu", "tactile", "joints"])
@pytest.mark.parametrize("kind", ["noise", "stuck", "bias", "zero", "delay"])
def test_series_faults_act_only_between_start_and_stop(modality: str, kind: str) -> None:
    stream = series(modality)
    out = run(FaultInjector(fault(modality, kind, magnitude=2.0, delay_ms=50.0), seed=3), modality, stream)
    before, during, after = phases(stream)
    clean = np.array([v for _, v in stream])
    got = np.array(out)
    for phase in (before, after):
        np.testing.assert_array_equal(got[phase], clean[phase])
    sig = slice(0, 6) if modality == "imu" else slice(None)
    np.testing.assert_array_equal(got[during][..., 6:], clean[during][..., 6:])  # IMU orientation kept
    g, c = got[during][..., sig], clean[during][..., sig]
    own_std = clean[before][..., sig].std(axis=0)
    if kind == "noise":
        residual = g - c
        np.testing.assert_allclose(residual.std(axis=0), 2.0 * own_std, rtol=0.25)
        assert np.abs(residual.mean(axis=0)).max() < 0.3 * own_std.min()
    elif kind == "bias":
        offset = g - c
        np.testing.assert_allclose(
            offset, np.broadcast_to(offset[0], offset.shape), atol=0.05 * own_std.min()
        )
        np.testing.assert_allclose(offset[0], 2.0 * own_std, rtol=0.25)
    elif kind == "stuck":
        last_clean = clean[before][-1][..., sig]
        assert (g == last_clean).all()
    elif kind == "zero":
        assert (g == 0).all()
    else:  # delay: the reading of 50 ms before, with the stamps unchanged
        idx = np.flatnonzero(during)
        np.testing.assert_array_equal(got[idx], clean[idx - 50])


def test_noise_is_deterministic_per_seed() -> None:
    stream = series("wrench")
    a = run(FaultInjector(fault("wrench", "noise"), seed=1), "wrench", stream)
    b = run(FaultInjector(fault("wrench", "noise"), seed=1), "wrench", stream)
    c = run(FaultInjector(fault("wrench", "noise"), seed=2), "wrench", stream)
    np.testing.assert_array_equal(np.array(a), np.array(b))
    assert not np.array_equal(np.array(a), np.array(c))


def test_other_modalities_pass_through_untouched() -> None:
    injector = FaultInjector(FaultConfig(modality="wrench", kind="zero"))
    stream = series("joints", n=200)
    out = run(injector, "joints", stream)
    assert all(o is v for o, (_, v) in zip(out, stream, strict=True))
    pose = np.ones(7)
    assert injector.apply("ee_pose", 5 * MS, pose) is pose


def test_live_switch_on_and_off() -> None:
    injector = FaultInjector()
    stream = series("wrench", n=300)
    got = []
    for i, (stamp, value) in enumerate(stream):
        if i == 100:
            injector.set(FaultConfig(modality="wrench", kind="zero"))
        if i == 200:
            injector.set(FaultConfig())
        got.append(injector.apply("wrench", stamp, value))
    got = np.array(got)
    clean = np.array([v for _, v in stream])
    np.testing.assert_array_equal(got[:100], clean[:100])
    assert (got[100:200] == 0).all()
    np.testing.assert_array_equal(got[200:], clean[200:])


def test_stamps_going_back_restart_the_fault_clock() -> None:
    injector = FaultInjector(fault("wrench", "zero"))
    stream = series("wrench")
    first = np.array(run(injector, "wrench", stream))
    second = np.array(run(injector, "wrench", stream))  # the bag played again
    np.testing.assert_array_equal(first, second)


def frames(kind: str, n: int = 90) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(2)
    base = (
        rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        if kind == "image"
        else rng.uniform(0.3, 2.0, (24, 32))
    )
    return [((i + 1) * 33 * MS, base.astype(base.dtype)) for i in range(n)]


@pytest.mark.parametrize("modality", ["image", "depth"])
@pytest.mark.parametrize("kind", ["blackout", "occlude", "noise"])
def test_camera_faults(modality: str, kind: str) -> None:
    stream = frames(modality)
    injector = FaultInjector(fault(modality, kind), seed=0)
    got = run(injector, modality, stream)
    _, during, after = phases(stream)
    for i, (_, v) in enumerate(stream):
        g = got[i]
        assert g.dtype == v.dtype and g.shape == v.shape
        if not during[i]:
            np.testing.assert_array_equal(g, v)
        elif kind == "blackout":
            assert (g == 0).all()
        elif kind == "occlude":
            half = v.shape[1] // 2
            assert (g[:, half:] == 0).all()
            np.testing.assert_array_equal(g[:, :half], v[:, :half])
        else:
            diff = g.astype(np.float64) - v
            spread = 1.0 if modality == "image" else 0.5  # clipping at 0/255 (0 m) trims the noise
            assert diff.std() > spread * 0.5 * v.std(dtype=np.float64)
            if modality == "depth":
                assert (g >= 0).all()
    assert during.any() and after.any()


def test_camera_faults_need_a_camera() -> None:
    with pytest.raises(ConfigError, match="camera fault"):
        FaultConfig(modality="wrench", kind="blackout")
    with pytest.raises(ConfigError, match="kind='melt'"):
        FaultConfig(modality="wrench", kind="melt")
    with pytest.raises(ConfigError, match="delay_ms"):
        FaultConfig(modality="imu", kind="delay", delay_ms=5000.0)


def test_fault_message_rebuilds_each_message_type() -> None:
    injector = FaultInjector(FaultConfig(modality="wrench", kind="zero"))
    msg = wrench_msg(7 * MS, "ft_sensor_link", np.arange(6.0))
    out = fault_message("wrench", msg, injector)
    stamp, value = convert("wrench", out)
    assert stamp == 7 * MS and out.header.frame_id == "ft_sensor_link" and (value == 0).all()
    # depth keeps its encoding (millimetres)
    injector = FaultInjector(FaultConfig(modality="depth", kind="occlude"))
    depth = image_msg(8 * MS, "cam", np.full((4, 6), 1500, dtype=np.uint16), "16UC1")
    out = fault_message("depth", depth, injector)
    assert out.encoding == "16UC1"
    _, metres = convert("depth", out)
    np.testing.assert_allclose(metres[:, :3], 1.5)
    assert (metres[:, 3:] == 0).all()
    # joint states keep every joint's name; a message left alone is the same object
    injector = FaultInjector(FaultConfig(modality="joints", kind="bias"))
    js = joint_state_msg(9 * MS, ["a", "b"], np.ones((3, 2)))
    assert fault_message("wrench", wrench_msg(9 * MS, "f", np.ones(6)), injector) is not None
    out = fault_message("joints", js, injector)
    assert list(out.name) == ["a", "b"]


def _robot(**shift):
    from structalign_ros.core.sim.robot import SimRobot

    cfg = StructAlignConfig()
    cfg.sim.width = cfg.sim.height = 48
    cfg.sim.shift = ShiftConfig(**shift)
    return SimRobot(cfg, 0, render=True)


def _first(robot, kind: str, seconds: float = 0.4) -> np.ndarray:
    values = [r.value for r in robot.run(seconds) if r.kind == kind]
    robot.close()
    return np.array(values)


def test_domain_shift_moves_the_camera_darkens_the_scene_and_weighs_the_tool() -> None:
    plain = _first(_robot(), "image")[-1].astype(float)
    turned = _first(_robot(camera_yaw_deg=25.0), "image")[-1].astype(float)
    dim = _first(_robot(light_scale=0.4), "image")[-1].astype(float)
    assert np.abs(turned - plain).mean() > 10, "another viewpoint, another picture"
    assert dim.mean() < 0.8 * plain.mean()
    # the F/T of the still arm carries the payload's weight on its tool axis (+x down: -z of the tool frame)
    w0 = _first(_robot(), "wrench")[200:400].mean(axis=0)
    w1 = _first(_robot(tool_mass_kg=0.3), "wrench")[200:400].mean(axis=0)
    assert np.linalg.norm(w1[:3] - w0[:3]) == pytest.approx(0.3 * 9.81, rel=0.1)


def test_shift_is_relative_to_the_built_workcell_and_can_be_undone() -> None:
    robot = _robot()
    m = robot.model
    built = (m.cam_pos.copy(), m.cam_quat.copy(), m.body_mass.copy(), m.light_diffuse.copy())
    robot.apply_shift(ShiftConfig(camera_yaw_deg=30.0, tool_mass_kg=0.2, light_scale=2.0))
    robot.apply_shift(ShiftConfig(camera_yaw_deg=30.0, tool_mass_kg=0.2, light_scale=2.0))  # not cumulative
    assert m.body_mass[m.body("tool").id] == pytest.approx(built[2][m.body("tool").id] + 0.2)
    robot.apply_shift(ShiftConfig())
    for now, then in zip((m.cam_pos, m.cam_quat, m.body_mass, m.light_diffuse), built, strict=True):
        np.testing.assert_array_equal(now, then)
    robot.close()
    with pytest.raises(ConfigError, match="tool_mass_kg"):
        ShiftConfig(tool_mass_kg=-1.0)


@pytest.mark.parametrize("robot", ["arm4", "arm6"])
def test_another_tool_moves_the_ground_truth_along_the_tool_axis_and_nothing_else(robot) -> None:
    from structalign_ros.core.config import SIM_ROBOTS
    from structalign_ros.core.sim.robot import SimRobot

    def readings(offset: float, swap_at: float | None = None) -> dict[str, np.ndarray]:
        cfg = StructAlignConfig()
        cfg.sim.robot = robot
        cfg.modalities["joints"].joint_names = SIM_ROBOTS[robot]
        cfg.sim.shift = ShiftConfig(tool_offset_m=0.0 if swap_at else offset)
        sim = SimRobot(cfg, 3, render=False)
        out: dict[str, list[np.ndarray]] = {}
        for r in sim.run(0.5):
            if swap_at is not None and r.stamp_ns >= swap_at * 1e9 and sim.shift.tool_offset_m != offset:
                sim.apply_shift(ShiftConfig(tool_offset_m=offset))  # live, as the sim node does
            out.setdefault(r.kind, []).append(r.value)
        sim.close()
        return {k: np.array(v) for k, v in out.items()}

    plain, swapped, live = readings(0.0), readings(0.05), readings(0.05, swap_at=0.25)
    for kind in ("wrench", "imu", "joints", "tactile", "object_pose"):
        np.testing.assert_array_equal(plain[kind], swapped[kind])  # the same robot doing the same thing
    moved = swapped["ee_pose"][:, :3] - plain["ee_pose"][:, :3]
    np.testing.assert_allclose(np.linalg.norm(moved, axis=1), 0.05, rtol=1e-6)
    np.testing.assert_allclose(swapped["ee_pose"][:, 3:], plain["ee_pose"][:, 3:])  # same orientation
    # along the tool's axis: the x axis of the end-effector frame (its site's z), here the pad normal
    w, x, y, z = plain["ee_pose"][:, 3:].T
    site_z = np.stack([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)], axis=1)
    np.testing.assert_allclose(moved, 0.05 * site_z, atol=1e-6)
    half = len(live["ee_pose"]) // 2
    np.testing.assert_allclose(live["ee_pose"][: half - 2], plain["ee_pose"][: half - 2])  # before the swap
    np.testing.assert_allclose(live["ee_pose"][half + 2 :], swapped["ee_pose"][half + 2 :])  # after it
    with pytest.raises(ConfigError, match="tool_offset_m"):
        ShiftConfig(tool_offset_m=1.0)


def test_recording_with_a_configured_fault(tmp_path) -> None:
    from structalign_ros.core.data.bags import iter_messages
    from structalign_ros.core.sim.record import record_episode

    cfg = StructAlignConfig()
    cfg.sim.fault = FaultConfig(modality="wrench", kind="zero", start_s=0.2)
    record_episode(tmp_path / "bag", cfg, seed=0, seconds=0.4, render=False)
    topic = cfg.modalities["wrench"].topic
    wrench = [convert("wrench", msg) for _, _, msg in iter_messages([tmp_path / "bag"], [topic])]
    late = [v for stamp, v in wrench if stamp > 0.21e9]
    early = [v for stamp, v in wrench if stamp < 0.19e9]
    assert late and all((v == 0).all() for v in late)
    assert all(np.abs(v).max() > 0 for v in early)


def test_play_options_resolve_to_a_fault_and_its_topic() -> None:
    import argparse

    from structalign_ros.commands import play

    parser = argparse.ArgumentParser()
    play.configure(parser)
    args = parser.parse_args(["bag", "--fault", "rgb:occlude", "--fault-start", "2", "--fault-stop", "4"])
    fault, topic = play.resolve_fault(args)
    assert fault == FaultConfig(modality="image", kind="occlude", start_s=2.0, stop_s=4.0)
    assert topic == StructAlignConfig().modalities["rgb"].topic
    args = parser.parse_args(["bag", "--fault", "imu:delay", "--fault-delay-ms", "40", "--fault-topic", "/x"])
    assert play.resolve_fault(args) == (FaultConfig(modality="imu", kind="delay", delay_ms=40.0), "/x")
    assert play.resolve_fault(parser.parse_args(["bag"])) == (None, "")
    for bad, match in (("wrench", "MODALITY:KIND"), ("nose:noise", "neither"), ("wrench:blackout", "camera")):
        with pytest.raises(ConfigError, match=match):
            play.resolve_fault(parser.parse_args(["bag", "--fault", bad]))
