"""The installed console scripts stopped the way ``ros2 launch`` stops them: SIGINT (Ctrl-C), or SIGTERM
(launch escalates to it after 5 s).

Each executable is started as launch starts it (``<venv>/bin/perception_node --ros-args --params-file
FILE``), fed the recorded episode over real DDS until it has fine-tuned weights installed, then sent
the signal. It must deactivate, write its final checkpoint, publish the DELETEALL marker, shut down
and exit 0 without a traceback.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from structalign_ros.core.config_io import from_dict, save_yaml, to_dict
from structalign_ros.core.data.bags import bag_info, iter_messages
from structalign_ros.core.learn.train import load_checkpoint

PREFIX = "/structalign_perception"
# Upper bounds on waiting for an event, never a pass/fail threshold: each wait ends as soon as its
# event happens, and only a node that never gets there fails.
EVENT_TIMEOUT_S = 180.0
EXIT_TIMEOUT_S = 60.0
SIGNALS = [signal.SIGINT, signal.SIGTERM]


def script(name: str) -> Path:
    """A console script of this environment (what ``ros2 run`` / launch execute)."""
    path = Path(sys.executable).with_name(name)
    assert path.is_file(), f"{path} is not installed (pip install -e .)"
    return path


def wait_for(predicate, timeout: float = EVENT_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


class LoopingPublisher:
    """Publishes the episode's messages from this process, over and over, until :meth:`close`: the
    node gets data for as long as it needs, however long discovery or start-up takes."""

    def __init__(self, context: Any, bag: Path) -> None:
        from rclpy.node import Node

        from structalign_ros.ros.messages import rclpy_class, to_rclpy

        self.node = Node("shutdown_feeder", context=context)
        self.bag, self._to_rclpy = bag, to_rclpy
        topics = bag_info(bag).topics
        self.pubs = {t: self.node.create_publisher(rclpy_class(m), t, 100) for t, (m, _) in topics.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t0_wall, t0_bag = time.monotonic(), None
            for topic, receive_ns, msg in iter_messages([self.bag], self.pubs):
                if self._stop.is_set():
                    return
                t0_bag = receive_ns if t0_bag is None else t0_bag
                delay = t0_wall + (receive_ns - t0_bag) * 1e-9 - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                self.pubs[topic].publish(self._to_rclpy(msg))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.node.destroy_node()


def fine_tuning_values(received) -> dict[str, str]:
    for item in reversed(received):
        for status in item.msg.status:
            if status.name.endswith(": fine-tuning"):
                return {kv.key: kv.value for kv in status.values}
    return {}


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_perception_node_stops_in_order_on_a_signal(
    sig, small_world, ros_env, ros_context, topic_recorder, tmp_path
):
    from diagnostic_msgs.msg import DiagnosticArray
    from visualization_msgs.msg import Marker, MarkerArray

    folder = tmp_path / "ckpt"
    data = to_dict(small_world.config)
    data["node"].update(
        {
            "model": str(small_world.checkpoint),
            "checkpoint_period_s": 3600.0,  # only the final checkpoint can be written in this test
        }
    )
    data["train"].update({"checkpoint_dir": str(folder), "swap_period_s": 0.05, "online_duty_cycle": 1.0})
    params = tmp_path / "params.yaml"
    save_yaml(from_dict(data), params)
    recorder = topic_recorder({f"{PREFIX}/weights_markers": MarkerArray, "/diagnostics": DiagnosticArray})
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    node = subprocess.Popen(
        [str(script("perception_node")), "--ros-args", "--params-file", str(params)],
        env=ros_env,
        stdout=out.open("w"),
        stderr=err.open("w"),
    )
    feeder = None
    try:
        feeder = LoopingPublisher(ros_context, small_world.bag)

        # fine-tuned weights are installed in the node: a final checkpoint has something to write
        def installed() -> bool:
            values = fine_tuning_values(recorder.snapshot()["/diagnostics"])
            return int(values.get("model_version", 0)) > 0

        assert wait_for(installed), err.read_text()
        assert not (folder / "last.pt").exists()
        node.send_signal(sig)
        code = node.wait(EXIT_TIMEOUT_S)
    finally:
        if feeder is not None:
            feeder.close()
        if node.poll() is None:
            node.kill()
            node.wait()
    logs = out.read_text() + err.read_text()
    assert code == 0, logs
    for symptom in ("Traceback", "InvalidHandle", "Unable to start transition", "internal error"):
        assert symptom not in logs, logs
    # in order: deactivated (a summary), final checkpoint, then nothing but shutdown
    assert "deactivated after" in logs and "checkpoint written to" in logs, logs
    assert load_checkpoint(folder / "last.pt").step > load_checkpoint(small_world.checkpoint).step
    # the RViz chart was cleared: the last marker array received is the DELETEALL
    assert wait_for(lambda: recorder.snapshot()[f"{PREFIX}/weights_markers"], 10)
    last = recorder.snapshot()[f"{PREFIX}/weights_markers"][-1]
    assert [m.action for m in last.msg.markers] == [Marker.DELETEALL], logs


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_sim_node_stops_cleanly_on_a_signal(sig, ros_env, topic_recorder, tmp_path):
    from geometry_msgs.msg import WrenchStamped

    from structalign_ros.core.config import StructAlignConfig

    topic = StructAlignConfig().modalities["wrench"].topic
    recorder = topic_recorder({topic: WrenchStamped})
    log = tmp_path / "sim.log"
    sim = subprocess.Popen(
        [str(script("sim_node")), "--ros-args", "-p", "sim.width:=32", "-p", "sim.height:=32"],
        env=ros_env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for(lambda: recorder.snapshot()[topic]), log.read_text()
        sim.send_signal(sig)
        code = sim.wait(EXIT_TIMEOUT_S)
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()
