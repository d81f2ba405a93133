"""Sensor noise and bias, since MuJoCo reports exact values.

Each sensor gets its own generator spawned from the episode seed, so an episode is reproducible and
turning one sensor off (``--no-render``) does not change the noise of the others. Magnitudes are
those of common hardware: a 6-axis strain-gauge F/T (ATI Mini45 class), a MEMS IMU, joint encoders
with current-based effort, a structured-light depth camera (error growing with range squared).
"""

from __future__ import annotations

import numpy as np

SENSORS = ("wrench", "imu", "joints", "tactile", "rgb", "depth")


class SensorNoise:
    """Per-episode noise models.

    Args:
        seed: episode seed; each sensor's generator is spawned from it.
        n_joints: joints in the joint-state vector.
        taxels: ``(rows, cols)`` of the tactile grid.
    """

    def __init__(self, seed: int, n_joints: int, taxels: tuple[int, int]) -> None:
        seqs = np.random.SeedSequence([seed, 0x5E45]).spawn(len(SENSORS))
        self.rng = {name: np.random.default_rng(s) for name, s in zip(SENSORS, seqs, strict=True)}
        r = self.rng
        # Constant biases of this episode (a sensor is zeroed once, then drifts off a little).
        self.wrench_bias = np.concatenate([r["wrench"].normal(0, 0.15, 3), r["wrench"].normal(0, 0.004, 3)])
        self.accel_bias = r["imu"].normal(0, 0.04, 3)
        self.gyro_bias = r["imu"].normal(0, 0.002, 3)
        self.effort_bias = r["joints"].normal(0, 0.05, n_joints)
        # Taxels differ in gain (manufacturing spread of piezo-resistive cells).
        self.taxel_gain = r["tactile"].uniform(0.9, 1.1, taxels)

    def wrench(self, w: np.ndarray) -> np.ndarray:
        """``(6,)`` force N, torque Nm -> biased and noisy."""
        sigma = np.array([0.05, 0.05, 0.05, 0.002, 0.002, 0.002])
        return w + self.wrench_bias + self.rng["wrench"].normal(0, sigma)

    def imu(self, accel: np.ndarray, gyro: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Accelerometer ``(3,)`` m/s² and gyro ``(3,)`` rad/s -> biased and noisy."""
        rng = self.rng["imu"]
        return accel + self.accel_bias + rng.normal(0, 0.02, 3), gyro + self.gyro_bias + rng.normal(
            0, 0.001, 3
        )

    def joints(self, state: np.ndarray) -> np.ndarray:
        """``(3, J)`` position rad, velocity rad/s, effort Nm -> encoder-quantised and noisy."""
        rng = self.rng["joints"]
        out = state.copy()
        out[0] = np.round(state[0] / 1e-5) * 1e-5  # 17-bit-class encoder resolution
        out[1] += rng.normal(0, 2e-3, state.shape[1])
        out[2] += self.effort_bias + rng.normal(0, 0.03, state.shape[1])
        return out

    def tactile(self, grid: np.ndarray) -> np.ndarray:
        """``(rows, cols)`` normal force per taxel N -> gain spread and noise; never negative."""
        noisy = grid * self.taxel_gain + self.rng["tactile"].normal(0, 0.01, grid.shape)
        return np.maximum(noisy, 0.0).astype(np.float32)

    def rgb(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 -> with sensor read noise (σ = 2 grey levels)."""
        noisy = image.astype(np.int16) + self.rng["rgb"].normal(0, 2.0, image.shape).astype(np.int16)
        return np.clip(noisy, 0, 255).astype(np.uint8)

    def depth(self, metres: np.ndarray) -> np.ndarray:
        """``(H, W)`` float32 metres -> range-dependent noise; pixels beyond 4 m read 0 (no return)."""
        sigma = 0.001 + 0.0015 * metres * metres
        noisy = metres + self.rng["depth"].standard_normal(metres.shape).astype(np.float32) * sigma
        return np.where((metres > 0) & (metres < 4.0), np.maximum(noisy, 0.0), 0.0).astype(np.float32)
