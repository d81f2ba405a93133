"""The simulated workcell as MJCF: a 4-joint arm with a wrist F/T sensor, an IMU and a tactile pad,
pushing and pressing one box whose size, mass, friction and place vary per seed.

Frames follow REP-103: the world is the arm's ``base_link`` (x forward, y left, z up). The arm pans
about z, then three pitch joints about y bend it in its vertical plane; the tool hangs below the
wrist with the contact pad's normal along the tool's +x axis, which the controller keeps pointing
down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from structalign_ros.core.config import SIM_JOINTS

JOINTS = tuple(SIM_JOINTS.split(","))
SHOULDER_HEIGHT = 0.25  # m, pan/lift axis above the floor
UPPER_ARM = 0.30  # m, shoulder to elbow
FOREARM = 0.30  # m, elbow to wrist
TOOL_LENGTH = 0.12  # m, wrist axis to the pad surface along the tool's x axis
PAD_HALF = 0.03  # m, half side of the square contact pad
TOOL_MASS = 0.45  # kg, everything the F/T sensor carries (flange, IMU, pad)
CAMERA = "scene_cam"


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


def _taxel_sites(rows: int, cols: int) -> str:
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
                f'<site name="taxel_{r}_{c}" type="box" pos="{TOOL_LENGTH + 0.0015:.4f} {y:.5f} {z:.5f}" '
                f'size="0.0025 {hy:.5f} {hz:.5f}" rgba="0 0 0 0"/>'
            )
    return "\n            ".join(sites)


def build_mjcf(
    obj: ObjectParams, width: int, height: int, taxel_rows: int, taxel_cols: int, timestep: float
) -> str:
    """The MJCF text of the workcell."""
    cam_pos = np.array([0.45, -0.75, 0.45])
    xyaxes = _look_at(cam_pos, np.array([0.42, 0.0, 0.05]))
    sx, sy, sz = obj.half_size
    ox, oy = obj.position
    touch = "\n    ".join(
        f'<touch name="taxel_{r}_{c}" site="taxel_{r}_{c}"/>'
        for r in range(taxel_rows)
        for c in range(taxel_cols)
    )
    pan, lift, elbow, wrist = JOINTS
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
    <camera name="{CAMERA}" pos="{cam_pos[0]} {cam_pos[1]} {cam_pos[2]}" xyaxes="{xyaxes}" fovy="50"/>
    <body name="base_link">
      <geom type="cylinder" size="0.06 {SHOULDER_HEIGHT / 2}" pos="0 0 {SHOULDER_HEIGHT / 2}"
            rgba="0.2 0.2 0.25 1"/>
      <body name="shoulder" pos="0 0 {SHOULDER_HEIGHT}" gravcomp="1">
        <joint name="{pan}" axis="0 0 1" range="-1.6 1.6"/>
        <geom type="sphere" size="0.05" mass="1" rgba="0.3 0.3 0.35 1" contype="0" conaffinity="0"/>
        <body name="upper_arm" gravcomp="1">
          <joint name="{lift}" axis="0 1 0" range="-1.2 1.5"/>
          <geom type="capsule" fromto="0 0 0 {UPPER_ARM} 0 0" size="0.03" mass="1.5" rgba="0.9 0.5 0.1 1"
                contype="0" conaffinity="0"/>
          <body name="forearm" pos="{UPPER_ARM} 0 0" gravcomp="1">
            <joint name="{elbow}" axis="0 1 0" range="-0.2 2.8"/>
            <geom type="capsule" fromto="0 0 0 {FOREARM} 0 0" size="0.025" mass="1" rgba="0.9 0.5 0.1 1"
                  contype="0" conaffinity="0"/>
            <body name="wrist" pos="{FOREARM} 0 0" gravcomp="1">
              <joint name="{wrist}" axis="0 1 0" range="-1.5 3.0"/>
              <geom type="sphere" size="0.03" mass="0.3" rgba="0.3 0.3 0.35 1" contype="0" conaffinity="0"/>
              <!-- The tool is a separate rigid body so the F/T site measures everything it carries;
                   it is deliberately not gravity-compensated: the sensor must read its weight. -->
              <body name="tool">
                <site name="ft_site" pos="0 0 0" zaxis="1 0 0"/>
                <geom type="cylinder" fromto="0.02 0 0 {TOOL_LENGTH - 0.012} 0 0" size="0.02"
                      mass="{TOOL_MASS - 0.05}" rgba="0.7 0.7 0.75 1" contype="0" conaffinity="0"/>
                <geom name="pad" type="box" pos="{TOOL_LENGTH - 0.006} 0 0" size="0.006 {PAD_HALF} {PAD_HALF}"
                      mass="0.05" rgba="0.15 0.15 0.15 1" friction="1.0 0.01 0.001"/>
                <site name="imu_site" pos="0.06 0 0" zaxis="-1 0 0"/>
                <site name="ee_site" pos="{TOOL_LENGTH} 0 0" zaxis="1 0 0"/>
                {_taxel_sites(taxel_rows, taxel_cols)}
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
    <body name="object" pos="{ox} {oy} {sz}">
      <freejoint name="object_free"/>
      <geom name="object" type="box" size="{sx} {sy} {sz}" mass="{obj.mass}"
            friction="{obj.friction} 0.01 0.001" rgba="0.15 0.45 0.85 1"/>
    </body>
  </worldbody>
  <actuator>
    <position name="{pan}" joint="{pan}"/>
    <position name="{lift}" joint="{lift}"/>
    <position name="{elbow}" joint="{elbow}"/>
    <position name="{wrist}" joint="{wrist}" kp="150"/>
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
