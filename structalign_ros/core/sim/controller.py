"""A scripted contact-rich task for the simulated arm: press on the box, then push it, and again.

Each cycle is planned from the box's current pose (ground truth), so the arm follows the box as it
moves. Cartesian waypoints for the pad are interpolated with a minimum-jerk profile (zero velocity and
acceleration at every waypoint, so the F/T sensor sees no jolts from the script itself) and turned
into joint targets by closed-form inverse kinematics of the pan + planar 3-pitch arm; the position
servos then produce the contact forces (commanding the pad below the box top is what presses).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from structalign_ros.core.sim.scene import FOREARM, SHOULDER_HEIGHT, TOOL_LENGTH, UPPER_ARM, ObjectParams

HOVER = 0.06  # m above the box top between contacts
PUSH_HEIGHT = 0.015  # m, pad surface above the floor while pushing with the pad's side
SETTLE_S = 0.5  # s the arm holds its start pose, as a real recording starts (and the F/T is tared)


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


class PushPressController:
    """Joint targets for the press-and-push cycle.

    Args:
        obj: the box, for its size.
        rng: draws the per-cycle press depth, push length and timing jitter (deterministic per seed).
    """

    def __init__(self, obj: ObjectParams, rng: np.random.Generator) -> None:
        self.obj = obj
        self.rng = rng
        self._start_pad = np.array([0.35, 0.0, 0.25])
        # (duration s, pad target) still to go; the first holds the start pose.
        self._segments: deque[tuple[float, np.ndarray]] = deque([(SETTLE_S, self._start_pad)])
        self._seg_t0 = 0.0

    @property
    def initial_joints(self) -> np.ndarray:
        """Joint angles ``(4,)`` of the start pose (pad above the workspace)."""
        return inverse_kinematics(self._start_pad)

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
        """Joint position targets ``(4,)`` at time ``t`` (s), given the box centre ``box_xyz``."""
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
        return inverse_kinematics(self._start_pad + blend * (goal - self._start_pad))
