"""A fault set live on a running simulator node (its own process) changes what it publishes, over
real DDS: the F/T goes to zero while ``sim.fault.kind=zero`` and comes back when it is cleared; an
invalid or a non-live value is refused with the reason."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import numpy as np

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.ros.messages import rclpy_class
from structalign_ros.ros.sim_node import MSG_TYPES, NODE_NAME

DEADLINE_S = 60.0  # only against a hang: every wait below ends on the event it waits for


def _wrench(msg: Any) -> np.ndarray:
    f, t = msg.wrench.force, msg.wrench.torque
    return np.array([f.x, f.y, f.z, t.x, t.y, t.z])


def _wait_until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_live_fault_parameter_changes_the_published_topic(
    topic_recorder: Any, ros_env: dict[str, str], ros_context: Any
) -> None:
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    topic = StructAlignConfig().modalities["wrench"].topic
    recorder = topic_recorder({topic: rclpy_class(MSG_TYPES["wrench"])})
    small = ["-p", "sim.width:=32", "-p", "sim.height:=32"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "structalign_ros.ros.sim_node", "--ros-args", *small],
        env=ros_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    node = Node("fault_setter", context=ros_context, start_parameter_services=False)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    client = AsyncParameterClient(node, NODE_NAME)

    def set_params(**values: Any) -> list[Any]:
        future = client.set_parameters([Parameter(k.replace("__", "."), value=v) for k, v in values.items()])
        executor.spin_until_future_complete(future, timeout_sec=DEADLINE_S)
        assert future.done(), "no answer from the node's parameter service"
        return list(future.result().results)

    def received() -> list[np.ndarray]:
        return [_wrench(r.msg) for r in recorder.snapshot()[topic]]

    try:
        assert recorder.wait_for([topic], DEADLINE_S), "the node never published its F/T"
        assert client.wait_for_services(timeout_sec=DEADLINE_S)
        clean_until = len(received())
        assert all(np.abs(w).max() > 0 for w in received()), "a clean F/T never reads exactly zero"

        results = set_params(sim__fault__modality="wrench", sim__fault__kind="zero")
        assert all(r.successful for r in results), [r.reason for r in results]
        # the messages sent after the change read zero: wait for 100 in a row
        _wait_until(lambda: _zero_run(received()[clean_until:]) >= 100, "100 zero F/T messages")

        # invalid values and parameters that cannot change live are refused, with the reason
        (bad,) = set_params(sim__fault__kind="blackout")
        assert not bad.successful and "camera fault" in bad.reason
        (fixed,) = set_params(sim__seed=5)
        assert not fixed.successful and "cannot change while the node runs" in fixed.reason

        cleared_at = len(received())
        (ok,) = set_params(sim__fault__kind="none")
        assert ok.successful, ok.reason
        _wait_until(lambda: _live_run(received()[cleared_at:]) >= 100, "100 non-zero F/T messages again")
    finally:
        node.destroy_node()
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    assert "fault: zero on wrench" in output and "Traceback" not in output, output


def _zero_run(items: list[np.ndarray]) -> int:
    """The longest run of consecutive all-zero readings."""
    best = run = 0
    for w in items:
        run = run + 1 if not w.any() else 0
        best = max(best, run)
    return best


def _live_run(items: list[np.ndarray]) -> int:
    """How many readings are non-zero after the last all-zero one."""
    count = 0
    for w in reversed(items):
        if not w.any():
            break
        count += 1
    return count


def test_play_injects_a_fault_into_one_topic(
    topic_recorder: Any, ros_env: dict[str, str], tmp_path: Any
) -> None:
    """``structalign play --fault wrench:zero --fault-start 0.5``: the F/T of the bag's first half
    second is played as recorded, then zeros; the IMU topic is untouched."""
    from structalign_ros.core.sim.record import record_episode

    config = StructAlignConfig()
    record_episode(tmp_path / "bag", config, seed=2, seconds=1.0, render=False)
    wrench, imu = config.modalities["wrench"].topic, config.modalities["imu"].topic
    recorder = topic_recorder({wrench: rclpy_class(MSG_TYPES["wrench"]), imu: rclpy_class(MSG_TYPES["imu"])})
    cmd = [sys.executable, "-m", "structalign_ros.cli", "play", str(tmp_path / "bag"), "--wait", "30"]
    done = subprocess.run(
        [*cmd, "--fault", "wrench:zero", "--fault-start", "0.5"],
        env=ros_env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S * 2,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _wait_until(lambda: len(recorder.snapshot()[wrench]) >= 1000, "the bag's 1000 F/T messages")
    got = recorder.snapshot()
    first = got[wrench][0].stamp_ns
    early = [_wrench(r.msg) for r in got[wrench] if r.stamp_ns - first < 0.49e9]
    late = [_wrench(r.msg) for r in got[wrench] if r.stamp_ns - first >= 0.5e9]
    assert len(early) >= 400 and all(w.any() for w in early)
    assert len(late) >= 400 and not any(w.any() for w in late)
    assert got[imu] and all(r.msg.linear_acceleration.z != 0 for r in got[imu]), "the IMU is not faulted"
    assert "fault zero on" in done.stdout and "500 messages changed" in done.stdout, done.stdout
