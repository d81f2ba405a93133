"""The simulated robot as a live ROS 2 node: every sensor topic at its rate, in real time.

:class:`SimNode` runs :class:`~structalign_ros.core.sim.robot.SimRobot` episodes in a physics thread
paced against the wall clock and publishes each reading as the same message a recorded bag holds
(:func:`~structalign_ros.core.sim.record.reading_to_msg`, copied to rclpy by
:func:`~structalign_ros.ros.messages.to_rclpy`), on the topics of
:func:`~structalign_ros.core.sim.record.topics_by_kind`, plus the ground-truth end-effector and object
poses and, with ``sim.publish_clock``, ``/clock``.

Stamps: ``stamp = start + simulated time``, where ``start`` is the node's ROS clock when the physics
thread starts, so stamps sit on the ROS time base of every other node (what a real driver does) and
a message is published when the ROS clock reaches its stamp. Episode ``k`` (seed ``sim.seed + k``)
starts where episode ``k - 1`` ended, so stamps keep increasing across episodes.

Real time: a reading is published when the wall clock reaches its simulated time. A machine too slow
to keep up still publishes every reading, late and as fast as it can; the lag is counted
(:attr:`SimNode.behind_s`, :attr:`SimNode.max_behind_s`, :attr:`SimNode.late`) and warned about at
most every :data:`WARN_PERIOD_S`.

MuJoCo's GL renderer belongs to the thread that created it, so the robot (and its renderers) is built,
used and closed inside the physics thread.
"""

from __future__ import annotations

import dataclasses
import itertools
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock

from structalign_ros.core.config import ConfigError, FaultConfig, ShiftConfig, StructAlignConfig
from structalign_ros.core.sim.faults import FaultInjector
from structalign_ros.core.sim.record import reading_to_msg, topics_by_kind
from structalign_ros.core.sim.robot import Reading, SimRobot
from structalign_ros.core.sim.scene import arm_for
from structalign_ros.ros.messages import rclpy_class, time_msg, to_rclpy
from structalign_ros.ros.params import LiveParameters, declare_config, node_options

NODE_NAME = "structalign_sim"
# Message type of each reading kind (what reading_to_msg builds).
MSG_TYPES = {
    "image": "sensor_msgs/msg/Image",
    "depth": "sensor_msgs/msg/Image",
    "tactile": "sensor_msgs/msg/Image",
    "wrench": "geometry_msgs/msg/WrenchStamped",
    "imu": "sensor_msgs/msg/Imu",
    "joints": "sensor_msgs/msg/JointState",
    "ee_pose": "geometry_msgs/msg/PoseStamped",
    "object_pose": "geometry_msgs/msg/PoseStamped",
}
CLOCK_HZ = 100.0  # /clock rate when sim.publish_clock (ros2 bag play --clock defaults to 40 Hz)
LATE_S = 0.05  # published this long after its simulated time, a reading is late (jitter is not)
WARN_PERIOD_S = 5.0  # at most one "behind real time" warning this often
# Settable while the node runs: the injected sensor fault and the domain shift (every other change is
# refused with the reason).
LIVE_PARAMETERS = tuple(f"sim.fault.{f.name}" for f in dataclasses.fields(FaultConfig)) + tuple(
    f"sim.shift.{f.name}" for f in dataclasses.fields(ShiftConfig)
)
# Reliable reaches both reliable and best-effort (sensor-data QoS) subscribers.
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class SimNode(Node):
    """Publishes the simulated robot's sensors and ground truth in real time.

    Configuration: the whole config tree as parameters (:func:`~structalign_ros.ros.params.declare_config`);
    the node reads ``modalities.*`` (topics, rates, enabled) and ``sim.*``. :meth:`start` starts the
    physics thread (once the subscribers it should feed exist), :meth:`stop` or :meth:`destroy_node`
    stops and joins it.

    Live parameters (:data:`LIVE_PARAMETERS`): ``sim.fault.*`` injects a sensor fault into what is
    published (:mod:`~structalign_ros.core.sim.faults`), ``sim.shift.*`` shifts the workcell (camera,
    tool mass, light); both take effect from the next reading. Any other change while the node runs
    is refused with the reason.

    Counters (read them from any thread): :attr:`published` messages per reading kind,
    :attr:`clock_published`, :attr:`episode` (index of the running episode), :attr:`sim_ns`
    (simulated time of the last published reading: its stamp is ``start_ns + sim_ns``),
    :attr:`behind_s` (how far the last reading was published after its simulated time, seconds),
    :attr:`max_behind_s`, :attr:`late` (readings published more than :data:`LATE_S` late),
    :attr:`error` (what stopped the physics thread, if it failed).

    Args:
        kwargs: passed to ``rclpy.node.Node`` (``context``, ``parameter_overrides``, ``cli_args``...).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_options(), **kwargs)
        self.config = declare_config(self)
        arm_for(self.config)  # a joints modality that does not fit sim.robot fails here, not in the thread
        self.topics = topics_by_kind(self.config)
        self._pubs = {
            kind: self.create_publisher(rclpy_class(MSG_TYPES[kind]), topic, QOS)
            for kind, topic in self.topics.items()
        }
        self._clock_pub = (
            self.create_publisher(Clock, "/clock", QOS) if self.config.sim.publish_clock else None
        )
        self.published: Counter[str] = Counter()
        self.clock_published = 0
        self.episode = 0
        self.behind_s = 0.0
        self.max_behind_s = 0.0
        self.late = 0
        self.error: BaseException | None = None
        self.start_ns = 0
        self.sim_ns = 0
        self._last_warn = -WARN_PERIOD_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="structalign_sim_physics", daemon=True)
        self._faults = FaultInjector(self.config.sim.fault, self.config.sim.seed)
        self._shift: ShiftConfig | None = None  # set live, not yet applied by the physics thread
        self._live = LiveParameters(self, LIVE_PARAMETERS, self._apply_live, lambda: self.config)
        self._live.running = True
        topics = ", ".join(f"{k}={t}" for k, t in self.topics.items())
        f = self.config.sim.fault
        fault = f"; fault {f.kind} on {f.modality} from {f.start_s:g} s to {f.stop_s:g} s" if f.active else ""
        self.get_logger().info(
            f"simulating seed {self.config.sim.seed}, {self.config.sim.episode_s:g} s episodes; {topics}"
            + ("; /clock" if self._clock_pub is not None else "")
            + fault
        )

    def _apply_live(self, config: StructAlignConfig) -> None:
        """A validated change of the live parameters (sim.fault.*, sim.shift.*): in force from the next
        reading (the running episode's workcell is shifted in place, later episodes are built so)."""
        if config.sim.shift != self.config.sim.shift:
            self._shift = config.sim.shift
        self.config = config
        self._faults.set(config.sim.fault)
        f, shift = config.sim.fault, config.sim.shift
        fault = f"{f.kind} on {f.modality}" if f.active else "none"
        self.get_logger().info(f"fault: {fault}; shift: {shift}")

    @property
    def running(self) -> bool:
        """Whether the physics thread is alive."""
        return self._thread.is_alive()

    def start(self) -> None:
        """Start the physics thread (once; the clock of the stamps starts with it)."""
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the physics thread and wait for it (its robot and renderers are closed by then)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def destroy_node(self) -> None:
        self.stop()
        super().destroy_node()

    def _run(self) -> None:
        sim = self.config.sim
        clock_period_ns = round(1e9 / CLOCK_HZ)
        wall0 = 0.0
        offset_ns = 0  # simulated ns before the running episode's step 0
        next_clock_ns = 0
        try:
            while not self._stop.is_set():
                # Building a robot (MJCF compile, GL contexts) takes ~0.1 s: the clock starts after the
                # first one is built, and a later episode starts when its robot is ready (a gap of that
                # build in the stamps, as a real robot's reset has) instead of starting behind.
                robot = SimRobot(self.config, sim.seed + self.episode)
                readings = self._primed(robot.run(sim.episode_s))
                if self.episode == 0:
                    # The ROS time base and the wall clock are read together: sim time t is due at both.
                    self.start_ns = self.get_clock().now().nanoseconds
                    wall0 = time.monotonic()
                else:
                    # On the physics step grid, so every stamp stays start + a whole number of steps.
                    elapsed_ns = round((time.monotonic() - wall0) * 1e9)
                    offset_ns = max(offset_ns, -(-elapsed_ns // robot.step_ns) * robot.step_ns)
                try:
                    for reading in readings:
                        sim_ns = offset_ns + reading.stamp_ns
                        if not self._wait_until(wall0 + sim_ns / 1e9):
                            return
                        if self._clock_pub is not None and sim_ns >= next_clock_ns:
                            self._clock_pub.publish(Clock(clock=time_msg(self.start_ns + sim_ns)))
                            self.clock_published += 1
                            next_clock_ns = sim_ns - sim_ns % clock_period_ns + clock_period_ns
                        if self._shift is not None:
                            shift, self._shift = self._shift, None
                            robot.apply_shift(shift)
                        value = self._faults.apply(reading.kind, sim_ns, reading.value)
                        stamped = dataclasses.replace(reading, stamp_ns=self.start_ns + sim_ns, value=value)
                        self._pubs[reading.kind].publish(to_rclpy(reading_to_msg(stamped, self.config)))
                        self.published[reading.kind] += 1
                        self.sim_ns = sim_ns
                    # robot.run stamps steps 1..N: the next episode's step 1 comes after this one's N.
                    offset_ns += round(sim.episode_s * sim.physics_hz) * robot.step_ns
                finally:
                    robot.close()
                self.episode += 1
        except Exception as exc:
            if self._stop.is_set() or not self.context.ok():
                return  # shutting down: the context went away under a publish
            self.error = exc
            self.get_logger().error(f"physics thread stopped: {exc!r}")

    def _primed(self, readings: Iterator[Reading]) -> Iterator[Reading]:
        """``readings`` with its first step already simulated, rendered and converted once.

        The first render and the first conversion of each message type cost ~0.2 s (GL start-up,
        type support imports); paid before the clock starts, they do not put the node behind.
        """
        head: list[Reading] = []
        for reading in readings:
            head.append(reading)
            if reading.stamp_ns > head[0].stamp_ns:
                break
        for reading in head:
            to_rclpy(reading_to_msg(reading, self.config))
        return itertools.chain(head, readings)

    def _wait_until(self, due: float) -> bool:
        """Sleep until monotonic time ``due``, or count the lag when it has passed; False on stop."""
        lag = time.monotonic() - due
        if lag < 0:
            self.behind_s = 0.0
            return not self._stop.wait(-lag)
        self.behind_s = lag
        if lag > LATE_S:
            self.late += 1
            self.max_behind_s = max(self.max_behind_s, lag)
            now = time.monotonic()
            if now - self._last_warn >= WARN_PERIOD_S:
                self._last_warn = now
                self.get_logger().warning(
                    f"{lag * 1e3:.0f} ms behind real time ({self.late} readings late, max "
                    f"{self.max_behind_s * 1e3:.0f} ms): this machine cannot simulate and publish in real "
                    "time; every reading is still published, late. Lower sim.width/height or the "
                    "modalities' rate_hz."
                )
        return not self._stop.is_set()


def main(args: list[str] | None = None) -> int:
    """Console script ``sim_node``: ``sim_node --ros-args --params-file FILE [-p name:=value]``.

    SIGINT and SIGTERM (``ros2 launch``) stop it in order: physics thread joined, node destroyed,
    then rclpy (whose own signal handlers are off: they would shut the context down under the
    publishing physics thread); exit code 0.
    """
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node: SimNode | None = None
    code = 0
    try:
        node = SimNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        node.start()
        while rclpy.ok() and node.running and not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
        if node.error is not None:
            code = 1
    except ConfigError as exc:
        print(f"{NODE_NAME}: invalid configuration: {exc}", flush=True)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
