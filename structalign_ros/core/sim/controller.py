"""A scripted contact-rich task for the simulated arm: press on the box, then push it, and again.

Each cycle is planned from the box's current pose (ground truth), so the arm follows the box as it
moves. Cartesian waypoints for the pad are interpolated with a minimum-jerk profile (zero velocity and
acceleration at every waypoint, so the F/T sensor sees no jolts from the script itself) and turned
into joint targets by closed-form inverse kinematics; the position servos then produce the contact
forces (commanding the pad below the box top is what presses).

``arm4`` is a pan + planar 3-pitch arm (:func:`inverse_kinematics`). ``arm6`` adds a wrist yaw and a
tool roll the task does not need: they follow a slow scripted motion (:class:`WristMotion`) and the
IK (:func:`inverse_kinematics_arm6`) places the pad for whatever tilt and roll they have, so the EE
position and orientation depend on every joint.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from structalign_ros.core.sim.scene import (
    ARM4,
    ARM6,
    FOREARM,
    SHOULDER_HEIGHT,
    TOOL_LENGTH,
    UPPER_ARM,
    ArmSpec,
    ObjectParams,
)

HOVER = 0.06  # m above the box top between contacts
PUSH_HEIGHT = 0.015  # m, pad surface above the floor while pushing with the pad's side
SETTLE_S = 0.5  # s the arm holds its start pose, as a real recording starts (and the F/T is tared)
WRIST_AMPLITUDES = (0.12, 0.5)  # rad, arm6's scripted wrist yaw (tool tilt) and tool roll, at most
WRIST_RAMP_S = 2.0  # s over which the scripted wrist motion fades in after the settle


def inverse_kinematics(pad: np.ndarray) -> np.ndarray:
    """Joint angles ``(4,)`` that put the pad surface centre at ``pad`` ``(3,)`` facing straight down.

    Elbow-up solution; targets out of reach are clipped to the arm's stretched length.
    """
    x, y, z = pad
    pan = np.arctan2(y, x)
    r = np.hypot(x, y)
    down = SHOULDER_HEIGHT - (z + TOOL_LENGTH)  # wrist below the shoulder, in the arm's plane
    d2 = r * r + down * down
    c = np.clip((d2 - UPPER_ARM**2 - FOREARM**2) / (2 * UPPER_ARM * FOREARM), -1.0, 1.0)
    elbow = np.arccos(c)
    lift = np.arctan2(down, r) - np.arctan2(FOREARM * np.sin(elbow), UPPER_ARM + FOREARM * np.cos(elbow))
    # Total pitch pi/2 points the tool's x axis (the pad normal) straight down.
    wrist = np.pi / 2 - lift - elbow
    return np.array([pan, lift, elbow, wrist])


def _planar(r: float, down: float, upper: float, fore: float) -> tuple[float, float]:
    """Lift and elbow (elbow up) that put the wrist ``r`` out and ``down`` below the shoulder."""
    d2 = r * r + down * down
    c = np.clip((d2 - upper**2 - fore**2) / (2 * upper * fore), -1.0, 1.0)
    elbow = np.arccos(c)
    lift = np.arctan2(down, r) - np.arctan2(fore * np.sin(elbow), upper + fore * np.cos(elbow))
    return float(lift), float(elbow)


def inverse_kinematics_arm6(
    pad: np.ndarray, wrist_yaw: float, tool_roll: float, arm: ArmSpec = ARM6
) -> np.ndarray:
    """Joint angles ``(6,)`` of the 6-joint arm that put the pad surface centre at ``pad`` ``(3,)``.

    The total pitch is pi/2 (the tool's x axis points down before the wrist yaw); ``wrist_yaw`` then
    tilts the tool sideways, out of the arm's plane, and ``tool_roll`` turns it about its own axis.
    The chain is ``Rz(pan) Ry(lift + elbow + pitch) Rz(yaw) Rx(roll)``, so the tool axis is
    ``Rz(pan) (0, sin yaw, -cos yaw)``: the wrist centre sits ``L sin(yaw)`` to the side of the pad
    in the arm's plane and ``L cos(yaw)`` above it. Targets out of reach are clipped.
    """
    x, y, z = pad
    length = arm.tool_length
    side = length * np.sin(wrist_yaw)
    rho = max(float(np.hypot(x, y)), abs(side) + 1e-9)
    pan = np.arctan2(y, x) - np.arcsin(side / rho)
    r = np.sqrt(rho * rho - side * side)
    down = arm.shoulder_height - (z + length * np.cos(wrist_yaw))
    lift, elbow = _planar(r, down, arm.upper_arm, arm.forearm)
    return np.array([pan, lift, elbow, np.pi / 2 - lift - elbow, wrist_yaw, tool_roll])


def _min_jerk(s: float) -> float:
    return s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)


class WristMotion:
    """A slow, smooth scripted motion for joints the task leaves free (arm6's wrist yaw and roll).

    Per joint, a sum of two sines with random frequencies (0.06-0.16 Hz), phases and split of the
    amplitude, faded in by a minimum-jerk ramp after the settle (so the start pose is held still).

    Args:
        rng: draws the frequencies, phases and weights (deterministic per seed).
        amplitudes: the most each joint moves from 0, rad.
    """

    def __init__(self, rng: np.random.Generator, amplitudes: Sequence[float]) -> None:
        n = len(amplitudes)
        self.freq = rng.uniform(0.06, 0.16, (n, 2))
        self.phase = rng.uniform(0.0, 2 * np.pi, (n, 2))
        split = rng.uniform(0.3, 0.7, n)
        self.amp = np.asarray(amplitudes, dtype=float)[:, None] * np.stack([split, 1.0 - split], axis=1)

    def __call__(self, t: float) -> np.ndarray:
        """Joint offsets ``(n,)`` at time ``t`` (s)."""
        ramp = _min_jerk(float(np.clip((t - SETTLE_S) / WRIST_RAMP_S, 0.0, 1.0)))
        return ramp * (self.amp * np.sin(2 * np.pi * self.freq * t + self.phase)).sum(axis=1)


class PushPressController:
    """Joint targets for the press-and-push cycle.

    Args:
        obj: the box, for its size.
        rng: draws the per-cycle press depth, push length and timing jitter (deterministic per seed).
        arm: the arm whose joints are commanded.
        wrist_rng: draws the scripted wrist motion of an arm with more than four joints (a generator
            of its own, so the task's draws are the same for every arm).
    """

    def __init__(
        self,
        obj: ObjectParams,
        rng: np.random.Generator,
        arm: ArmSpec = ARM4,
        wrist_rng: np.random.Generator | None = None,
    ) -> None:
        self.obj = obj
        self.rng = rng
        self.arm = arm
        self.wrist: WristMotion | None = None
        if arm.name != ARM4.name:
            self.wrist = WristMotion(wrist_rng or np.random.default_rng(0), WRIST_AMPLITUDES)
        self._start_pad = np.array(arm.start_pad)
        # (duration s, pad target) still to go; the first holds the start pose.
        self._segments: deque[tuple[float, np.ndarray]] = deque([(SETTLE_S, self._start_pad)])
        self._seg_t0 = 0.0

    def _ik(self, pad: np.ndarray, t: float) -> np.ndarray:
        if self.wrist is None:
            return inverse_kinematics(pad)
        yaw, roll = self.wrist(t)
        return inverse_kinematics_arm6(pad, yaw, roll, self.arm)

    @property
    def initial_joints(self) -> np.ndarray:
        """Joint angles ``(J,)`` of the start pose (pad above the workspace)."""
        return self._ik(self._start_pad, 0.0)

    def _plan(self, box_xyz: np.ndarray) -> None:
        sx, _, sz = self.obj.half_size
        x, y, _ = box_xyz
        top = 2 * sz
        press = top - self.rng.uniform(0.002, 0.006)
        # Push toward the middle of the reachable band so the box stays within reach.
        direction = 1.0 if x < 0.43 else -1.0
        behind = x - direction * (sx + 0.045)
        length = self.rng.uniform(0.05, 0.09)
        jitter = self.rng.uniform(0.9, 1.1)
        above = np.array([x, y, top + HOVER])
        self._segments.extend(
            [
                (0.8 * jitter, above),
                (0.5 * jitter, np.array([x, y, press])),
                (0.4, np.array([x, y, press])),  # hold the press
                (0.4, above),
                (0.5, np.array([behind, y, top + HOVER])),
                (0.5, np.array([behind, y, PUSH_HEIGHT])),
                (1.5 * jitter, np.array([behind + direction * length, y, PUSH_HEIGHT])),
                (0.4, np.array([behind + direction * length, y, top + HOVER])),
            ]
        )

    def joint_targets(self, t: float, box_xyz: np.ndarray) -> np.ndarray:
        """Joint position targets ``(J,)`` at time ``t`` (s), given the box centre ``box_xyz``."""
        while True:
            if not self._segments:
                self._plan(box_xyz)
            duration, goal = self._segments[0]
            if t - self._seg_t0 < duration:
                break
            self._seg_t0 += duration
            self._start_pad = goal
            self._segments.popleft()
        s = (t - self._seg_t0) / duration
        blend = s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)
        return self._ik(self._start_pad + blend * (goal - self._start_pad), t)
