"""The simulated robot node over real DDS: the node runs in its own process (``python -m
structalign_ros.ros.sim_node``), this process subscribes to everything it publishes.

Two runs share the module's domain one after the other: the defaults but for ``-p`` smaller images
(no ``/clock``), and a parameter file that renames the F/T topic, asks for ``/clock`` and short
episodes. A third test runs the node in this process with every physics step slowed below real time (a
sleep per step, so the premise holds on any machine), to see it count the lag and still publish
everything.
"""

from __future__ import annotations

import itertools
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.sim.record import FRAMES, topics_by_kind
from structalign_ros.ros.messages import rclpy_class
from structalign_ros.ros.sim_node import LATE_S, MSG_TYPES, SimNode

COLLECT_S = 3.0  # seconds of traffic recorded once every topic has spoken (at least)
MORE_TIMEOUT_S = 60.0  # how long a run may go on past COLLECT_S for what a test waits for
START_TIMEOUT_S = 20.0
RENAMED_WRENCH = "/test_sim/wrench_renamed"
STEP_NS = 1_000_000  # sim.physics_hz = 1000: every stamp is start + a whole number of ms


def _message_classes() -> dict[str, type]:
    return {kind: rclpy_class(msgtype) for kind, msgtype in MSG_TYPES.items()}


def _rates(config: StructAlignConfig) -> dict[str, float]:
    rates = {}
    for m in config.modalities.values():
        if m.enabled:
            rates.setdefault(m.kind, m.rate_hz)
    rates["ee_pose"] = rates["object_pose"] = config.sim.ground_truth_hz
    return rates


@dataclass
class SimRun:
    config: StructAlignConfig
    by_kind: dict[str, list[Any]]  # kind -> Received, in arrival order
    window: tuple[float, float]  # monotonic span over which rates are judged
    clock: list[Any]
    default_wrench: list[Any]  # what arrived on the default F/T topic
    returncode: int
    output: str


def _run_sim(
    recorder_factory: Any,
    env: dict[str, str],
    config: StructAlignConfig,
    ros_args: list[str],
    until: Any = None,
) -> SimRun:
    """Run the sim node; record COLLECT_S s of traffic once every topic spoke, and then on until
    ``until(snapshot)`` holds when given (the machine's speed decides how much sim time that is)."""
    from rosgraph_msgs.msg import Clock

    classes = _message_classes()
    topics = topics_by_kind(config)
    subscriptions = {topic: classes[kind] for kind, topic in topics.items()}
    subscriptions["/clock"] = Clock
    default_wrench = StructAlignConfig().modalities["wrench"].topic
    subscriptions.setdefault(default_wrench, classes["wrench"])
    recorder = recorder_factory(subscriptions)
    proc = subprocess.Popen(
        [sys.executable, "-m", "structalign_ros.ros.sim_node", "--ros-args", *ros_args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        spoke = recorder.wait_for(list(topics.values()), START_TIMEOUT_S)
        start = time.monotonic()
        if spoke:
            time.sleep(COLLECT_S)
            deadline = time.monotonic() + MORE_TIMEOUT_S
            while until is not None and not until(recorder.snapshot()) and time.monotonic() < deadline:
                time.sleep(0.1)
        end = time.monotonic()
    finally:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    got = recorder.snapshot()
    assert spoke, f"not every topic of {topics} arrived within {START_TIMEOUT_S} s:\n{output}"
    return SimRun(
        config,
        {kind: got[topic] for kind, topic in topics.items()},
        (start, end),
        got["/clock"],
        got[default_wrench] if default_wrench not in topics.values() else [],
        proc.returncode,
        output,
    )


def _small_images(config: StructAlignConfig) -> StructAlignConfig:
    # 32x32 renders cost a quarter of the default's: the test shares 2 cores with other work
    config.sim.width = config.sim.height = 32
    return config


@pytest.fixture(scope="module")
def default_run(topic_recorder: Any, ros_env: dict[str, str]) -> SimRun:
    size = ["-p", "sim.width:=32", "-p", "sim.height:=32"]
    return _run_sim(topic_recorder, ros_env, _small_images(StructAlignConfig()), size)


@pytest.fixture(scope="module")
def file_run(topic_recorder: Any, ros_env: dict[str, str], tmp_path_factory: Any) -> SimRun:
    params = {
        "modalities.wrench.topic": RENAMED_WRENCH,
        "sim.publish_clock": True,
        "sim.episode_s": 1.0,
        "sim.seed": 3,
        "sim.width": 32,
        "sim.height": 32,
    }
    path = tmp_path_factory.mktemp("sim_params") / "sim.yaml"
    path.write_text(yaml.safe_dump({"structalign_sim": {"ros__parameters": params}}))
    config = _small_images(StructAlignConfig())
    config.modalities["wrench"].topic = RENAMED_WRENCH
    config.sim.publish_clock, config.sim.episode_s, config.sim.seed = True, 1.0, 3
    poses = topics_by_kind(config)["object_pose"]
    return _run_sim(
        topic_recorder,
        ros_env,
        config,
        ["--params-file", str(path)],
        until=lambda got: len(_episode_changes(got.get(poses, []))) >= 2,
    )


def _episode_changes(poses: list[Any]) -> list[tuple[Any, Any]]:
    """Consecutive object-pose readings between which the box jumps: a new episode (seed + 1) has
    placed a new box."""
    changes = []
    for a, b in itertools.pairwise(poses):
        pa, pb = a.msg.pose.position, b.msg.pose.position
        if abs(pa.x - pb.x) + abs(pa.y - pb.y) + abs(pa.z - pb.z) > 0.005:
            changes.append((a, b))
    return changes


def _check_stream(run: SimRun, kind: str, episodes: bool) -> None:
    items = run.by_kind[kind]
    rate = _rates(run.config)[kind]
    stamps = [r.stamp_ns for r in items]
    assert all(s > 0 for s in stamps)
    assert all(b > a for a, b in itertools.pairwise(stamps)), f"{kind}: stamps not increasing"
    # sampled at its rate in simulated time: the median stamp step is one period (30 Hz: 33/34 steps)
    period = statistics.median(b - a for a, b in itertools.pairwise(stamps)) / 1e9
    assert period == pytest.approx(1 / rate, rel=0.05), kind
    # Real time where the machine allows it; on an oversubscribed machine the node may fall behind,
    # but then it must say so (it publishes everything, late, and warns) rather than lag silently.
    said_behind = "behind real time" in run.output
    late = f"{kind}: late without a warning; the node said:\n{run.output}"
    start, end = run.window
    if not episodes:  # (each new episode waits for its robot to be built: a gap in the stamps)
        # nothing lost: no step longer than a period (plus the 30 Hz rounding)
        assert max(b - a for a, b in itertools.pairwise(stamps)) <= 1e9 / rate + STEP_NS, kind
        # and delivered in real time: the count over the recording window matches the rate
        arrived = sum(1 for r in items if start <= r.recv_mono < end)
        assert said_behind or arrived == pytest.approx(rate * (end - start), rel=0.25), late
    # stamps are on the ROS clock: the node publishes when the ROS clock reaches the stamp, never before
    delay_s = [(r.recv_ros_ns - r.stamp_ns) / 1e9 for r in items]
    assert min(delay_s) > -0.01, f"{kind}: arrived before its stamp (faster than real time)"
    assert said_behind or statistics.median(delay_s) < 0.25, late
    assert {r.frame_id for r in items} == {FRAMES.get(kind, "")}, kind


KINDS = ("image", "depth", "wrench", "imu", "tactile", "joints", "ee_pose", "object_pose")


@pytest.mark.parametrize("kind", KINDS)
def test_every_topic_arrives_at_its_rate_with_ros_time_stamps_and_rep105_frames(
    default_run: SimRun, kind: str
) -> None:
    _check_stream(default_run, kind, episodes=False)


def test_stamps_are_consistent_across_topics(default_run: SimRun) -> None:
    stamps = {kind: [r.stamp_ns for r in items] for kind, items in default_run.by_kind.items()}
    # one time base: every stamp is the same start plus whole physics steps
    residues = {s % STEP_NS for v in stamps.values() for s in v}
    assert len(residues) == 1
    # aligned depth shares the colour frame's stamps, the two ground-truth poses share theirs
    common = set(stamps["image"]) & set(stamps["depth"])
    assert len(common) >= len(stamps["image"]) - 2
    assert len(set(stamps["ee_pose"]) & set(stamps["object_pose"])) >= len(stamps["ee_pose"]) - 2
    # every stream is at the same simulated time at the end of the recording
    last = [max(v) for v in stamps.values()]
    assert max(last) - min(last) < 0.25e9


def test_clock_only_when_asked(default_run: SimRun, file_run: SimRun) -> None:
    assert default_run.clock == []
    clock = [r.stamp_ns for r in file_run.clock]
    assert len(clock) > 50
    assert all(b > a for a, b in itertools.pairwise(clock))
    period = statistics.median(b - a for a, b in itertools.pairwise(clock))
    assert period == pytest.approx(1e7, rel=0.05)  # 100 Hz
    # /clock is the stamps' time: within 10 ms of every sensor stamp published around it
    wrench = [r.stamp_ns for r in file_run.by_kind["wrench"]]
    assert min(clock) - 10_000_000 <= max(wrench) and max(clock) + 10_000_000 >= min(wrench)
    assert clock[0] % STEP_NS == wrench[0] % STEP_NS


def test_parameter_file_renames_a_topic(file_run: SimRun) -> None:
    assert file_run.by_kind["wrench"], "nothing on the renamed F/T topic"
    assert file_run.default_wrench == [], "still publishing on the default F/T topic"


def test_episodes_restart_with_increasing_stamps(file_run: SimRun) -> None:
    for kind in KINDS:
        _check_stream(file_run, kind, episodes=True)
    changes = _episode_changes(file_run.by_kind["object_pose"])
    for a, b in changes:
        assert b.stamp_ns > a.stamp_ns
        assert b.stamp_ns - a.stamp_ns < 2e9, "more than a robot build between episodes"
    assert len(changes) >= 2, f"{len(changes)} episode changes of 1 s episodes"


def test_process_exits_cleanly_on_sigterm(default_run: SimRun, file_run: SimRun) -> None:
    for run in (default_run, file_run):
        assert run.returncode == 0, run.output
        assert "Traceback" not in run.output, run.output


class _SlowPhysics(SimNode):
    """A simulated robot whose every physics step takes at least 2 ms of wall time (1 kHz physics):
    behind real time by construction, however fast the machine, without touching the pacing code."""

    STEP_SLEEP_S = 0.002

    def _primed(self, readings: Any) -> Any:
        return self._slowed(super()._primed(readings))

    def _slowed(self, readings: Any) -> Any:
        last = None
        for reading in readings:
            if reading.stamp_ns != last:
                last = reading.stamp_ns
                time.sleep(self.STEP_SLEEP_S)
            yield reading


def test_behind_real_time_is_counted_and_nothing_is_dropped(ros_context: Any) -> None:
    from rclpy.parameter import Parameter

    # every step sleeps twice its simulated duration: after N steps the node is >= N ms behind
    overrides = [Parameter("sim.width", value=32), Parameter("sim.height", value=32)]
    node = _SlowPhysics(context=ros_context, parameter_overrides=overrides)
    node.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while node.late < 20 and node.running and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        node.destroy_node()
    assert not node.running
    assert node.error is None
    assert node.late >= 20 and node.max_behind_s > LATE_S
    # every reading up to the simulated time reached was published: 1 kHz F/T has one per ms
    sim_s = node.sim_ns / 1e9
    assert node.published["wrench"] == pytest.approx(sim_s * 1000, abs=2)
    assert node.published["image"] == pytest.approx(sim_s * 30, abs=2)
