"""``/diagnostics`` stays the same size under a flood of distinct malformed messages (a flaky driver, a
DDS fuzzer): bad inputs are counted by modality and a fixed vocabulary of reason codes.

The perception node runs as its installed console script; this process publishes, over real DDS,
two waves of malformed messages on four sensor topics, every message's reason text different from
every other's (another size, another encoding, another joint name, another stamp). Each wave ends
with one sentinel message whose text is known, sent until ``bad.latest`` shows it: then everything
of the wave that reached the node has been counted, however fast or loaded the machine is.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from structalign_ros.core.config_io import from_dict, save_yaml, to_dict
from structalign_ros.core.serve.telemetry import CODES

WAVE = 1000  # messages per topic and wave (4 topics: 4000 distinct reasons a wave)
EVENT_TIMEOUT_S = 180.0  # upper bound on waiting for an event, never a pass/fail threshold


def windows_values(received) -> dict[str, str]:
    for item in reversed(received):
        for status in item.msg.status:
            if status.name.endswith(": windows"):
                return {kv.key: kv.value for kv in status.values}
    return {}


def wait_for(predicate, timeout: float = EVENT_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.05)
    return None


class Flood:
    """Malformed messages on the camera, tactile, joints and IMU topics, each with its own reason."""

    def __init__(self, context: Any, config) -> None:
        from rclpy.node import Node
        from sensor_msgs.msg import Image, Imu, JointState

        self.node = Node("fuzzer", context=context)
        self.topics = {n: config.modalities[n].topic for n in ("rgb", "tactile", "joints", "imu")}
        qos = 1000
        self.pubs = {
            "rgb": self.node.create_publisher(Image, self.topics["rgb"], qos),
            "tactile": self.node.create_publisher(Image, self.topics["tactile"], qos),
            "joints": self.node.create_publisher(JointState, self.topics["joints"], qos),
            "imu": self.node.create_publisher(Imu, self.topics["imu"], qos),
        }
        self.joint_names = list(config.modalities["joints"].joint_list)
        self.stamp_ns = 1_000_000_000

    def _header(self, msg: Any) -> Any:
        self.stamp_ns += 100_000
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(self.stamp_ns, 1_000_000_000)
        return msg

    def camera(self, k: int) -> Any:
        """A wrong-size frame: ``data has <k+1> bytes, expected ...``."""
        from sensor_msgs.msg import Image

        msg = Image(height=32, width=32, encoding="rgb8", step=96, data=bytes(k + 1))
        return self._header(msg)

    def send(self, k: int) -> None:
        from sensor_msgs.msg import Image, Imu, JointState

        self.pubs["rgb"].publish(self.camera(k))
        tactile = Image(height=4, width=4, encoding=f"fuzz{k}", step=4, data=bytes(16))
        self.pubs["tactile"].publish(self._header(tactile))
        names = [f"fuzz_joint_{k}", *self.joint_names[1:]]
        n = len(names)
        joints = JointState(name=names, position=[0.0] * n, velocity=[0.0] * n, effort=[0.0] * n)
        self.pubs["joints"].publish(self._header(joints))
        imu = self._header(Imu())
        imu.linear_acceleration.x = float("nan")
        imu.angular_velocity.y = float("nan") if k % 2 else 0.0  # 1 or 2 non-finite values
        self.pubs["imu"].publish(imu)

    def wave(self, start: int, recorder) -> dict[str, str]:
        """``WAVE`` rounds of distinct faults, then the sentinel until the node reports it."""
        for k in range(start, start + WAVE):
            self.send(k)
            time.sleep(0.001)
        sentinel = start + WAVE + 10**6
        expected = f"data has {sentinel + 1} bytes"

        def reported() -> dict[str, str] | None:
            self.pubs["rgb"].publish(self.camera(sentinel))
            values = windows_values(recorder.snapshot()["/diagnostics"])
            return values if expected in values.get("bad.latest", "") else None

        return wait_for(reported)

    def close(self) -> None:
        self.node.destroy_node()


def test_diagnostics_keys_stay_fixed_under_thousands_of_distinct_faults(
    small_world, ros_env, ros_context, topic_recorder, tmp_path
):
    from diagnostic_msgs.msg import DiagnosticArray

    data = to_dict(small_world.config)
    data["node"].update({"model": str(small_world.checkpoint), "finetune": False})
    for name in ("rgb", "tactile", "joints", "imu"):  # reliable and deep: the flood is not thinned
        data["modalities"][name].update({"qos_reliability": "reliable", "qos_depth": 1000})
    params = tmp_path / "params.yaml"
    save_yaml(from_dict(data), params)
    recorder = topic_recorder({"/diagnostics": DiagnosticArray})
    log = tmp_path / "node.log"
    node = subprocess.Popen(
        [str(Path(sys.executable).with_name("perception_node")), "--ros-args", "--params-file", str(params)],
        env=ros_env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    flood = Flood(ros_context, small_world.config)
    try:
        assert wait_for(lambda: windows_values(recorder.snapshot()["/diagnostics"])), log.read_text()
        first = flood.wave(0, recorder)
        assert first is not None, log.read_text()[-3000:]
        second = flood.wave(WAVE, recorder)
        assert second is not None, log.read_text()[-3000:]
    finally:
        flood.close()
        node.terminate()
        node.wait(60)
    bad_first = {k for k in first if k.startswith("bad.")}
    bad_second = {k for k in second if k.startswith("bad.")}
    # the same keys after 4 000 and after 8 000 distinct reasons: counts grew, keys did not
    assert bad_first == bad_second, sorted(bad_first ^ bad_second)
    assert len(first) == len(second)
    expected = {
        "bad.rgb.bad_size",
        "bad.tactile.bad_encoding",
        "bad.joints.joints_missing",
        "bad.imu.non_finite",
        "bad.latest",
    }
    assert bad_second == expected, sorted(bad_second)
    assert all(k.rsplit(".", 1)[1] in CODES for k in bad_second - {"bad.latest"})
    for key in expected - {"bad.latest"}:
        assert int(second[key]) > int(first[key]) > 0, (key, first[key], second[key])
