"""The simulated workcell as MJCF: an arm with a wrist F/T sensor, an IMU and a tactile pad, pushing
and pressing one box whose size, mass, friction and place vary per seed.

Two arms (:data:`ARMS`, picked by ``sim.robot``):

- ``arm4`` (the default): pans about z, then three pitch joints about y bend it in its vertical
  plane; the tool hangs below the wrist with the contact pad's normal along the tool's +x axis, which
  the controller keeps pointing down.
- ``arm6``: the same pan + 3 pitch layout with other link lengths, then a spherical wrist: after the
  wrist pitch, a wrist yaw (about the link's z, tilting the tool sideways) and a tool roll (about the
  tool's x, the pad normal), all three axes through one point; a heavier tool, a shorter one, and the
  camera on the other side of the table.

Frames follow REP-103: the world is the arm's ``base_link`` (x forward, y left, z up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from structalign_ros.core.config import SIM_ROBOTS, ConfigError, StructAlignConfig

PAD_HALF = 0.03  # m, half side of the square contact pad
CAMERA = "scene_cam"


@dataclass(frozen=True)
class ArmSpec:
    """One simulated arm's geometry (m, kg) and its camera.

    ``joints`` are in actuator (and joint-state) order; the first four are always pan, lift, elbow and
    wrist pitch, any further ones come after the wrist pitch.
    """

    name: str
    joints: tuple[str, ...]
    shoulder_height: float  # pan/lift axis above the floor
    upper_arm: float  # shoulder to elbow
    forearm: float  # elbow to wrist
    tool_length: float  # wrist centre to the pad surface along the tool's x axis
    tool_mass: float  # everything the F/T sensor carries (flange, IMU, pad)
    camera_pos: tuple[float, float, float]
    camera_target: tuple[float, float, float]
    camera_fovy: float  # degrees
    start_pad: tuple[float, float, float]  # pad centre of the start pose


ARM4 = ArmSpec(
    name="arm4",
    joints=tuple(SIM_ROBOTS["arm4"].split(",")),
    shoulder_height=0.25,
    upper_arm=0.30,
    forearm=0.30,
    tool_length=0.12,
    tool_mass=0.45,
    camera_pos=(0.45, -0.75, 0.45),
    camera_target=(0.42, 0.0, 0.05),
    camera_fovy=50.0,
    start_pad=(0.35, 0.0, 0.25),
)
ARM6 = ArmSpec(
    name="arm6",
    joints=tuple(SIM_ROBOTS["arm6"].split(",")),
    shoulder_height=0.22,
    upper_arm=0.32,
    forearm=0.28,
    tool_length=0.10,
    tool_mass=0.60,
    camera_pos=(0.95, 0.55, 0.65),
    camera_target=(0.40, 0.0, 0.06),
    camera_fovy=45.0,
    start_pad=(0.33, 0.0, 0.20),
)
ARMS = {arm.name: arm for arm in (ARM4, ARM6)}  # the same names as config.SIM_ROBOTS


def arm_for(config: StructAlignConfig) -> ArmSpec:
    """The arm ``config.sim.robot`` names.

    Raises:
        ConfigError: an enabled ``joints`` modality does not list exactly that arm's joints (its
            window arrays would not match what the simulator publishes).
    """
    arm = ARMS[config.sim.robot]
    for name, m in config.modalities.items():
        if m.enabled and m.kind == "joints" and sorted(m.joint_list) != sorted(arm.joints):
            raise ConfigError(
                f"modalities.{name}.joint_names={m.joint_names!r} does not match sim.robot={arm.name!r}: "
                f"set it to {','.join(arm.joints)!r}"
                + ("" if arm is ARM4 else f" (config/sim_{arm.name}.yaml has every {arm.name} setting)")
            )
    return arm


# The default arm's geometry under its historical names.
JOINTS = ARM4.joints
SHOULDER_HEIGHT = ARM4.shoulder_height
UPPER_ARM = ARM4.upper_arm
FOREARM = ARM4.forearm
TOOL_LENGTH = ARM4.tool_length
TOOL_MASS = ARM4.tool_mass


@dataclass(frozen=True)
class ObjectParams:
    """The pushed box of one episode (all SI units)."""

    half_size: tuple[float, float, float]
    mass: float
    friction: float
    position: tuple[float, float]  # x, y of its centre on the floor


def sample_object(rng: np.random.Generator) -> ObjectParams:
    """A box within reach whose size, mass and friction differ per seed."""
    half_xy = rng.uniform(0.025, 0.045)
    return ObjectParams(
        half_size=(half_xy, half_xy, float(rng.uniform(0.02, 0.04))),
        mass=float(rng.uniform(0.1, 0.6)),
        friction=float(rng.uniform(0.3, 0.9)),
        position=(float(rng.uniform(0.38, 0.48)), float(rng.uniform(-0.12, 0.12))),
    )


def _look_at(pos: np.ndarray, target: np.ndarray) -> str:
    """MJCF ``xyaxes`` of a camera at ``pos`` looking at ``target`` with world z up."""
    forward = (target - pos) / np.linalg.norm(target - pos)
    x = np.cross(forward, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(-forward, x)
    return " ".join(f"{v:.5f}" for v in (*x, *y))


def _taxel_sites(rows: int, cols: int, tool_length: float) -> str:
    """Box sites tiling the pad's outer face, one per taxel, named ``taxel_<r>_<c>``.

    A touch sensor sums the normal force of contacts inside its site. The sites start 1 mm inside the
    pad face and reach 4 mm beyond it, where face contact points lie, but not down the pad's sides: a
    push with the pad's edge must show on the F/T sensor only, as on a real skin.
    """
    # The grid overhangs the pad by 2 mm: box-box contact points sit on the pad's rim.
    half = PAD_HALF + 0.002
    hy, hz = half / cols, half / rows
    sites = []
    for r in range(rows):
        for c in range(cols):
            y = -half + (2 * c + 1) * hy
            z = half - (2 * r + 1) * hz
            sites.append(
                f'<site name="taxel_{r}_{c}" type="box" pos="{tool_length + 0.0015:.4f} {y:.5f} {z:.5f}" '
                f'size="0.0025 {hy:.5f} {hz:.5f}" rgba="0 0 0 0"/>'
            )
    return "\n            ".join(sites)


def _tool(arm: ArmSpec, taxel_rows: int, taxel_cols: int) -> str:
    """The tool body: F/T site at its origin, IMU, contact pad with its taxels, the EE site."""
    length = arm.tool_length
    return f"""<!-- The tool is a separate rigid body so the F/T site measures everything it carries;
                   it is deliberately not gravity-compensated: the sensor must read its weight. -->
              <body name="tool">
                <site name="ft_site" pos="0 0 0" zaxis="1 0 0"/>
                <geom type="cylinder" fromto="0.02 0 0 {length - 0.012} 0 0" size="0.02"
                      mass="{arm.tool_mass - 0.05}" rgba="0.7 0.7 0.75 1" contype="0" conaffinity="0"/>
                <geom name="pad" type="box" pos="{length - 0.006} 0 0" size="0.006 {PAD_HALF} {PAD_HALF}"
                      mass="0.05" rgba="0.15 0.15 0.15 1" friction="1.0 0.01 0.001"/>
                <site name="imu_site" pos="0.06 0 0" zaxis="-1 0 0"/>
                <site name="ee_site" pos="{length} 0 0" zaxis="1 0 0"/>
                {_taxel_sites(taxel_rows, taxel_cols, length)}
              </body>"""


def _arm4(arm: ArmSpec, tool: str) -> tuple[str, str]:
    """Bodies and actuators of the pan + 3-pitch arm."""
    pan, lift, elbow, wrist = arm.joints
    h, upper, fore = arm.shoulder_height, arm.upper_arm, arm.forearm
    bodies = f"""<body name="base_link">
      <geom type="cylinder" size="0.06 {h / 2}" pos="0 0 {h / 2}"
            rgba="0.2 0.2 0.25 1"/>
      <body name="shoulder" pos="0 0 {h}" gravcomp="1">
        <joint name="{pan}" axis="0 0 1" range="-1.6 1.6"/>
        <geom type="sphere" size="0.05" mass="1" rgba="0.3 0.3 0.35 1" contype="0" conaffinity="0"/>
        <body name="upper_arm" gravcomp="1">
          <joint name="{lift}" axis="0 1 0" range="-1.2 1.5"/>
          <geom type="capsule" fromto="0 0 0 {upper} 0 0" size="0.03" mass="1.5" rgba="0.9 0.5 0.1 1"
                contype="0" conaffinity="0"/>
          <body name="forearm" pos="{upper} 0 0" gravcomp="1">
            <joint name="{elbow}" axis="0 1 0" range="-0.2 2.8"/>
            <geom type="capsule" fromto="0 0 0 {fore} 0 0" size="0.025" mass="1" rgba="0.9 0.5 0.1 1"
                  contype="0" conaffinity="0"/>
            <body name="wrist" pos="{fore} 0 0" gravcomp="1">
              <joint name="{wrist}" axis="0 1 0" range="-1.5 3.0"/>
              <geom type="sphere" size="0.03" mass="0.3" rgba="0.3 0.3 0.35 1" contype="0" conaffinity="0"/>
              {tool}
            </body>
          </body>
        </body>
      </body>
    </body>"""
    actuators = f"""<position name="{pan}" joint="{pan}"/>
    <position name="{lift}" joint="{lift}"/>
    <position name="{elbow}" joint="{elbow}"/>
    <position name="{wrist}" joint="{wrist}" kp="150"/>"""
    return bodies, actuators


def _arm6(arm: ArmSpec, tool: str) -> tuple[str, str]:
    """Bodies and actuators of the 6-joint arm: pan + 3 pitch, then wrist yaw and tool roll.

    The wrist pitch, yaw and roll axes meet at the wrist centre (a spherical wrist); the roll axis is
    the tool's x axis, so the pad centre lies on it.
    """
    pan, lift, elbow, pitch, yaw, roll = arm.joints
    h, upper, fore = arm.shoulder_height, arm.upper_arm, arm.forearm
    bodies = f"""<body name="base_link">
      <geom type="box" size="0.07 0.07 {h / 2}" pos="0 0 {h / 2}" rgba="0.25 0.25 0.3 1"/>
      <body name="shoulder" pos="0 0 {h}" gravcomp="1">
        <joint name="{pan}" axis="0 0 1" range="-2.0 2.0"/>
        <geom type="cylinder" size="0.055 0.04" mass="1.2" rgba="0.35 0.35 0.4 1"
              contype="0" conaffinity="0"/>
        <body name="upper_arm" gravcomp="1">
          <joint name="{lift}" axis="0 1 0" range="-1.7 1.5"/>
          <geom type="capsule" fromto="0 0 0 {upper} 0 0" size="0.032" mass="1.8" rgba="0.2 0.45 0.8 1"
                contype="0" conaffinity="0"/>
          <body name="forearm" pos="{upper} 0 0" gravcomp="1">
            <joint name="{elbow}" axis="0 1 0" range="-0.2 2.9"/>
            <geom type="capsule" fromto="0 0 0 {fore} 0 0" size="0.024" mass="0.9" rgba="0.2 0.45 0.8 1"
                  contype="0" conaffinity="0"/>
            <body name="wrist" pos="{fore} 0 0" gravcomp="1">
              <joint name="{pitch}" axis="0 1 0" range="-1.5 3.0"/>
              <geom type="sphere" size="0.028" mass="0.25" rgba="0.35 0.35 0.4 1"
                    contype="0" conaffinity="0"/>
              <body name="wrist_yaw_link" gravcomp="1">
                <joint name="{yaw}" axis="0 0 1" range="-0.8 0.8"/>
                <geom type="cylinder" fromto="0 0 -0.025 0 0 0.025" size="0.018" mass="0.15"
                      rgba="0.35 0.35 0.4 1" contype="0" conaffinity="0"/>
                <body name="tool_flange" gravcomp="1">
                  <joint name="{roll}" axis="1 0 0" range="-3.0 3.0"/>
                  <geom type="cylinder" fromto="0 0 0 0.015 0 0" size="0.025" mass="0.1"
                        rgba="0.35 0.35 0.4 1" contype="0" conaffinity="0"/>
              {tool}
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>"""
    actuators = f"""<position name="{pan}" joint="{pan}"/>
    <position name="{lift}" joint="{lift}"/>
    <position name="{elbow}" joint="{elbow}"/>
    <position name="{pitch}" joint="{pitch}" kp="150"/>
    <position name="{yaw}" joint="{yaw}" kp="80"/>
    <position name="{roll}" joint="{roll}" kp="40"/>"""
    return bodies, actuators


_BUILDERS = {"arm4": _arm4, "arm6": _arm6}


def build_mjcf(
    obj: ObjectParams,
    width: int,
    height: int,
    taxel_rows: int,
    taxel_cols: int,
    timestep: float,
    arm: ArmSpec = ARM4,
) -> str:
    """The MJCF text of the workcell with ``arm``."""
    cam_pos = np.array(arm.camera_pos)
    xyaxes = _look_at(cam_pos, np.array(arm.camera_target))
    camera = (
        f'<camera name="{CAMERA}" pos="{cam_pos[0]} {cam_pos[1]} {cam_pos[2]}" xyaxes="{xyaxes}" '
        f'fovy="{arm.camera_fovy:g}"/>'
    )
    sx, sy, sz = obj.half_size
    ox, oy = obj.position
    touch = "\n    ".join(
        f'<touch name="taxel_{r}_{c}" site="taxel_{r}_{c}"/>'
        for r in range(taxel_rows)
        for c in range(taxel_cols)
    )
    bodies, actuators = _BUILDERS[arm.name](arm, _tool(arm, taxel_rows, taxel_cols))
    return f"""
<mujoco model="structalign_workcell">
  <compiler angle="radian"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic"/>
  <visual>
    <!-- No shadows and no multisampling: software rendering must keep up with 30 Hz on a CPU. -->
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{width}" offheight="{height}"/>
    <map znear="0.05" zfar="5"/>
  </visual>
  <default>
    <joint damping="2" armature="0.05"/>
    <position kp="400" dampratio="1" ctrlrange="-3.2 3.2"/>
    <geom condim="4" solref="0.004 1"/>
  </default>
  <worldbody>
    <light directional="true" pos="0 0 2" dir="0 0.3 -1" castshadow="false"/>
    <geom name="floor" type="plane" size="1 1 0.05" rgba="0.55 0.55 0.5 1" friction="0.6 0.01 0.001"/>
    {camera}
    {bodies}
    <body name="object" pos="{ox} {oy} {sz}">
      <freejoint name="object_free"/>
      <geom name="object" type="box" size="{sx} {sy} {sz}" mass="{obj.mass}"
            friction="{obj.friction} 0.01 0.001" rgba="0.15 0.45 0.85 1"/>
    </body>
  </worldbody>
  <actuator>
    {actuators}
  </actuator>
  <sensor>
    <force name="ft_force" site="ft_site"/>
    <torque name="ft_torque" site="ft_site"/>
    <accelerometer name="imu_accel" site="imu_site"/>
    <gyro name="imu_gyro" site="imu_site"/>
    {touch}
  </sensor>
</mujoco>
"""
