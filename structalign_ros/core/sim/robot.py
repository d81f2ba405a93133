"""The simulated robot: MuJoCo physics stepping the workcell and sampling every sensor at its rate.

:class:`SimRobot` yields :class:`Reading` objects in time order, stamped on the physics step they were
taken at (integer ns). The same readings feed the bag recorder (:mod:`.record`) and a live sim node.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import mujoco
import numpy as np

from structalign_ros.core.config import ConfigError, ShiftConfig, StructAlignConfig
from structalign_ros.core.sim.controller import PushPressController
from structalign_ros.core.sim.noise import SensorNoise
from structalign_ros.core.sim.scene import CAMERA, ObjectParams, arm_for, build_mjcf, sample_object

# The two ground-truth readings, beside the sensor kinds of the modalities.
GROUND_TRUTH = ("ee_pose", "object_pose")
CONTROL_HZ = 100.0  # joint targets are recomputed this often; the servos run at the physics rate


@dataclass(frozen=True)
class Reading:
    """One sensor sample.

    ``value`` layouts: ``image`` ``(H, W, 3)`` uint8 RGB; ``depth`` ``(H, W)`` float32 metres (0 = no
    return); ``wrench`` ``(6,)`` force N, torque Nm in the F/T frame; ``imu`` ``(10,)`` accelerometer
    m/s² (with gravity), gyro rad/s, orientation quaternion w x y z; ``tactile`` ``(rows, cols)``
    float32 N; ``joints`` ``(3, J)`` position, velocity, effort; ``ee_pose`` / ``object_pose``
    ``(7,)`` position m and quaternion w x y z in ``base_link``.
    """

    kind: str
    stamp_ns: int
    value: np.ndarray


class SimRobot:
    """One seeded episode of the press-and-push task.

    Args:
        config: sensor rates come from the enabled modalities of each kind, the arm
            (``sim.robot``) and image settings from ``config.sim``; a ``joints`` modality that does
            not list the arm's joints is a :class:`ConfigError`.
        seed: fixes the box, the controller's choices and all sensor noise.
        render: render the camera and depth images (off: physics and the other sensors only).
    """

    def __init__(self, config: StructAlignConfig, seed: int, render: bool = True) -> None:
        sim = config.sim
        self.config = config
        self.arm = arm_for(config)
        self.joints = self.arm.joints
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x0B1]))
        self.object: ObjectParams = sample_object(rng)
        self.model = mujoco.MjModel.from_xml_string(
            build_mjcf(
                self.object,
                sim.width,
                sim.height,
                sim.taxel_rows,
                sim.taxel_cols,
                1.0 / sim.physics_hz,
                self.arm,
            )
        )
        self.data = mujoco.MjData(self.model)
        wrist_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA6]))
        self.controller = PushPressController(self.object, rng, self.arm, wrist_rng)
        self.noise = SensorNoise(seed, len(self.joints), (sim.taxel_rows, sim.taxel_cols))
        self.step_ns = round(1e9 / sim.physics_hz)
        self.rates = self._rates(config, render)
        m = self.model
        self._joint_q = np.array([m.jnt_qposadr[m.joint(n).id] for n in self.joints])
        self._joint_v = np.array([m.jnt_dofadr[m.joint(n).id] for n in self.joints])
        self._sensor = {
            name: slice(m.sensor(name).adr[0], m.sensor(name).adr[0] + m.sensor(name).dim[0])
            for name in ("ft_force", "ft_torque", "imu_accel", "imu_gyro")
        }
        self._taxels = np.array(
            [m.sensor(f"taxel_{r}_{c}").adr[0] for r in range(sim.taxel_rows) for c in range(sim.taxel_cols)]
        )
        self._object_body = m.body("object").id
        self._site = {name: m.site(name).id for name in ("ee_site", "imu_site")}
        self._camera, self._tool = m.camera(CAMERA).id, m.body("tool").id
        self._as_built = (
            m.cam_pos[self._camera].copy(),
            m.cam_quat[self._camera].copy(),
            float(m.body_mass[self._tool]),
            m.body_inertia[self._tool].copy(),
            m.light_diffuse.copy(),
            m.vis.headlight.diffuse.copy(),
            m.vis.headlight.ambient.copy(),
            m.site_pos[self._site["ee_site"]].copy(),
        )
        self.shift = ShiftConfig()
        if sim.shift != self.shift:
            self.apply_shift(sim.shift)
        self.data.qpos[self._joint_q] = self.controller.initial_joints
        self.data.ctrl[:] = self.controller.initial_joints
        mujoco.mj_forward(m, self.data)
        self._renderer: mujoco.Renderer | None = None
        self._depth_renderer: mujoco.Renderer | None = None
        if "image" in self.rates or "depth" in self.rates:
            self._renderer = mujoco.Renderer(m, sim.height, sim.width)
            self._depth_renderer = mujoco.Renderer(m, sim.height, sim.width)
            self._depth_renderer.enable_depth_rendering()

    @staticmethod
    def _rates(config: StructAlignConfig, render: bool) -> dict[str, float]:
        rates: dict[str, float] = {}
        for m in config.modalities.values():
            if m.enabled and m.kind not in rates and (render or m.kind not in ("image", "depth")):
                rates[m.kind] = m.rate_hz
        for kind in GROUND_TRUTH:
            if kind != "ee_pose" or config.ground_truth_topic:  # empty: not published, not simulated
                rates[kind] = config.sim.ground_truth_hz
        too_fast = {k: r for k, r in rates.items() if r > config.sim.physics_hz}
        if too_fast:
            raise ConfigError(f"sensor rates {too_fast} exceed sim.physics_hz={config.sim.physics_hz}")
        return rates

    def apply_shift(self, shift: ShiftConfig) -> None:
        """Put the workcell in ``shift`` relative to how it was built (not cumulative); callable between
        steps, from the thread that runs :meth:`run`.

        The camera orbits the vertical axis through the point it looks at, the tool's mass grows by
        the payload (its inertia in proportion, centre of mass unchanged), the lights' diffuse and
        the headlight's diffuse and ambient colour scale by ``light_scale``, and the end-effector site
        (the ground-truth pose) moves ``tool_offset_m`` along the tool's axis (its x, the pad normal).
        """
        m = self.model
        pos, quat, mass, inertia, light, head_diffuse, head_ambient, tcp = self._as_built
        yaw = np.radians(shift.camera_yaw_deg)
        if yaw:
            target = np.array(self.arm.camera_target)
            c, s = np.cos(yaw), np.sin(yaw)
            turn = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            m.cam_pos[self._camera] = target + turn @ (pos - target)
            mujoco.mju_mulQuat(
                m.cam_quat[self._camera], np.array([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]), quat
            )
        else:
            m.cam_pos[self._camera], m.cam_quat[self._camera] = pos, quat
        m.body_mass[self._tool] = mass + shift.tool_mass_kg
        m.body_inertia[self._tool] = inertia * (mass + shift.tool_mass_kg) / mass
        m.light_diffuse[:] = light * shift.light_scale
        m.vis.headlight.diffuse[:] = head_diffuse * shift.light_scale
        m.vis.headlight.ambient[:] = head_ambient * shift.light_scale
        m.site_pos[self._site["ee_site"]] = tcp + np.array([shift.tool_offset_m, 0.0, 0.0])
        self.shift = shift

    def close(self) -> None:
        """Release the renderers' GL contexts."""
        for r in (self._renderer, self._depth_renderer):
            if r is not None:
                r.close()
        self._renderer = self._depth_renderer = None

    def run(self, seconds: float) -> Iterator[Reading]:
        """Step the physics for ``seconds`` and yield every reading due, in time order."""
        hz = self.config.sim.physics_hz
        steps = round(seconds * hz)
        due = dict.fromkeys(self.rates, 0.0)  # next due step (fractional: 30 Hz is 33.3 steps)
        period = {k: hz / r for k, r in self.rates.items()}
        control_every = max(1, round(hz / CONTROL_HZ))
        for k in range(steps):
            if k % control_every == 0:
                box = self.data.xpos[self._object_body]
                self.data.ctrl[:] = self.controller.joint_targets(k / hz, box)
            mujoco.mj_step(self.model, self.data)
            stamp = (k + 1) * self.step_ns
            for kind, next_step in due.items():
                if k >= next_step:
                    due[kind] = next_step + period[kind]
                    yield Reading(kind, stamp, self._read(kind))

    def _read(self, kind: str) -> np.ndarray:
        d, s = self.data, self._sensor
        if kind == "wrench":
            return self.noise.wrench(
                np.concatenate([d.sensordata[s["ft_force"]], d.sensordata[s["ft_torque"]]])
            )
        if kind == "imu":
            accel, gyro = self.noise.imu(d.sensordata[s["imu_accel"]], d.sensordata[s["imu_gyro"]])
            return np.concatenate([accel, gyro, self._site_quat("imu_site")])
        if kind == "joints":
            state = np.stack([d.qpos[self._joint_q], d.qvel[self._joint_v], d.actuator_force.copy()])
            return self.noise.joints(state)
        if kind == "tactile":
            grid = d.sensordata[self._taxels].reshape(self.config.sim.taxel_rows, self.config.sim.taxel_cols)
            return self.noise.tactile(grid)
        if kind == "image":
            assert self._renderer is not None
            self._renderer.update_scene(d, camera=CAMERA)
            return self.noise.rgb(self._renderer.render())
        if kind == "depth":
            assert self._depth_renderer is not None
            self._depth_renderer.update_scene(d, camera=CAMERA)
            return self.noise.depth(self._depth_renderer.render())
        if kind == "ee_pose":
            return np.concatenate([d.site_xpos[self._site["ee_site"]], self._site_quat("ee_site")])
        if kind == "object_pose":
            return np.concatenate([d.xpos[self._object_body], d.xquat[self._object_body]])
        raise ValueError(f"unknown reading kind {kind!r}")

    def _site_quat(self, site: str) -> np.ndarray:
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self._site[site]])
        return quat
