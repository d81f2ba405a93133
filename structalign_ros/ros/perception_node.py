"""The perception node: a lifecycle node around :class:`~core.serve.perception.PerceptionPipeline`.

Lifecycle:

- configure: read and validate the parameters, load the model (a checkpoint in ``train.checkpoint_dir``
  first, so fine-tuning survives a restart, else ``node.model``, else the shipped default), build the
  pipeline, create the publishers and the diagnostics timer. Any failure (bad parameter, missing or
  corrupt model, sensors that do not fit the model) fails the transition with the reason logged and
  kept in :attr:`PerceptionNode.last_error`; the node stays up, unconfigured.
- activate: subscribe to the sensors, start the online trainer (``node.finetune``) and the checkpoint
  timer; the live parameters (:data:`LIVE`) may change from now on, every other one is refused.
- deactivate: unsubscribe, stop fine-tuning, write a checkpoint, clear the RViz chart (DELETEALL).
- cleanup / shutdown: release the model and the publishers (shutdown checkpoints first).

Threads: a sensor reader thread takes the sensor messages straight from their subscriptions
(:mod:`structalign_ros.ros.ingest`: rclpy's executor is too slow for 1.7 k messages a second on two
cores), converts them and cuts windows (cheap), then queues each finished window for the inference
worker thread, which runs the model and publishes; the executor keeps services, parameters and
timers; the online trainer runs in a child process of lower priority (:mod:`~core.serve.online`,
so its Python-heavy steps never hold this process's interpreter lock) and hands new weights over by an
atomic swap; checkpoints are written from a short-lived thread. So neither the model nor training ever delays
reading a 1 kHz sensor.

Outputs, each stamped with its window's pivot (camera) stamp, never ``now()``:

==========================  =========================  ===========================================
topic (node namespace)      type                       content
==========================  =========================  ===========================================
``~/ee_pose``               geometry_msgs/PoseStamped  end-effector pose regression, ``node.base_frame``
``~/modality_weights``      sensor_msgs/JointState     ``name`` = modalities, ``position`` = lambda
``~/embeddings``            sensor_msgs/Image 32FC1    rows = modalities in ``name`` order, then the
                                                       fused embedding; a missing modality's row is 0
``~/weights_markers``       visualization_msgs/        RViz bar chart of lambda
                            MarkerArray
``/diagnostics``            diagnostic_msgs/           about every ``node.diagnostics_period_s``
                            DiagnosticArray
==========================  =========================  ===========================================

Why these types: ROS 2 has no standard stamped float-array message (``Float32MultiArray`` has no
header and is deprecated). ``JointState`` is the standard stamped message of named scalars, which is
what the weights are (PlotJuggler and ``ros2 topic echo`` show them by name); an ``Image`` with one
float row per embedding is stamped, has fixed width ``d`` and needs no custom message package.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, WrenchStamped
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image, Imu, JointState
from visualization_msgs.msg import MarkerArray

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.learn.train import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    remove_partial_checkpoints,
)
from structalign_ros.core.serve.perception import MS, InferenceQueue, PerceptionPipeline, WindowOutput
from structalign_ros.ros.diagnostics import diagnostic_array
from structalign_ros.ros.ingest import PolledGroup, SensorReader
from structalign_ros.ros.markers import delete_all, weight_markers
from structalign_ros.ros.messages import time_msg
from structalign_ros.ros.params import LiveParameters, declare_config, node_options, read_config

NAME = "structalign_perception"
DEFAULT_MODEL = "sim_default.pt"
CHECKPOINT = "last.pt"
# Parameters that may change while the node is active; the rest need a reconfigure.
LIVE = (
    "node.finetune",
    "node.marker_lifetime_s",
    "node.stall_warn_s",
    "node.sensor_health",
    "train.lr",
    "train.weight_decay",
    "train.grad_clip",
    "objective.pose_weight",
)
MESSAGE_TYPES = {
    "image": Image,
    "depth": Image,
    "tactile": Image,
    "wrench": WrenchStamped,
    "imu": Imu,
    "joints": JointState,
}
IDLE_CHECK_S = 0.02
GROUND_TRUTH = "ground truth"
# How long deactivation waits for subscribers to acknowledge the DELETEALL marker.
MARKER_ACK_S = 1.0


def _unused(msg: Any) -> None:
    """Callback of the polled subscriptions: never called (see :mod:`structalign_ros.ros.ingest`)."""


def default_model_path() -> Path:
    """The shipped model: in the package's share directory (colcon or pip install) or the source tree."""
    candidates = [Path(sys.prefix) / "share" / "structalign_ros" / "models" / DEFAULT_MODEL]
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            share = Path(get_package_share_directory("structalign_ros"))
            candidates.insert(0, share / "models" / DEFAULT_MODEL)
        except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset (pip install)
            pass
    except ImportError:
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "models" / DEFAULT_MODEL)
    return next((p for p in candidates if p.is_file()), candidates[-1])


class PerceptionNode(LifecycleNode):
    """See the module docstring. ``kwargs`` go to ``LifecycleNode`` (e.g. ``parameter_overrides``)."""

    def __init__(self, name: str = NAME, **kwargs: Any) -> None:
        super().__init__(name, **node_options(), **kwargs)
        self.last_error = ""
        try:
            self.config = declare_config(self)
        except Exception as exc:  # reported again, with the reason, by configure
            self.config = StructAlignConfig()
            self.get_logger().error(f"invalid parameters: {exc}")
        self.pipeline: PerceptionPipeline | None = None
        self.model_source = ""
        self.active = False
        self.live = LiveParameters(self, LIVE, self._apply_live, lambda: self.config)
        self._windows: InferenceQueue | None = None
        self._worker: threading.Thread | None = None
        self._saving = threading.Lock()
        self._subscriptions_held: list[Any] = []
        self._reader: SensorReader | None = None
        self._active_timers: list[Any] = []
        self._pub: dict[str, Any] = {}
        self._diag_timer: Any = None
        self._last_diag = (time.monotonic(), 0, 0)

    # -- lifecycle ----------------------------------------------------------------------------
    def _fail(self, what: str, exc: BaseException) -> TransitionCallbackReturn:
        self.last_error = f"{what} failed: {exc}"
        self.get_logger().error(self.last_error)
        return TransitionCallbackReturn.FAILURE

    def _load(self, config: StructAlignConfig) -> tuple[Checkpoint, str]:
        if config.train.checkpoint_dir:
            saved = Path(config.train.checkpoint_dir) / CHECKPOINT
            for stale in remove_partial_checkpoints(saved):
                # an interrupted write; the checkpoint it was replacing is intact
                self.get_logger().warning(f"removed the partial checkpoint {stale}")
            if saved.exists():
                try:
                    return load_checkpoint(saved), str(saved)
                except CheckpointError as exc:
                    self.get_logger().error(f"{exc}; starting from the configured model instead")
        path = Path(config.node.model) if config.node.model else default_model_path()
        return load_checkpoint(path), str(path)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            config = read_config(self)
            torch.set_num_threads(config.runtime.threads)
            checkpoint, source = self._load(config)
            pipeline = PerceptionPipeline(config, checkpoint, warn=self._warn)
        except Exception as exc:  # any reason not to run is reported, never raised
            return self._fail("configure", exc)
        self.config, self.pipeline, self.model_source = config, pipeline, source
        self.last_error = ""
        # What is loaded now (modules, the model, the session) lives as long as the node: keep it out of
        # the cyclic garbage collector, whose full passes over it took ~100 ms, a latency spike every
        # few seconds at 1.7 k messages/s. Short-lived objects are still collected as before.
        gc.freeze()
        self._pub = {
            "pose": self.create_publisher(PoseStamped, "~/ee_pose", 10),
            "weights": self.create_publisher(JointState, "~/modality_weights", 10),
            "embeddings": self.create_publisher(Image, "~/embeddings", 10),
            "markers": self.create_publisher(MarkerArray, "~/weights_markers", 10),
            "diagnostics": self.create_publisher(DiagnosticArray, "/diagnostics", 10),
        }
        self._last_diag = (time.monotonic(), 0, 0)
        self._diag_timer = self.create_timer(config.node.diagnostics_period_s, self._on_diagnostics)
        self.get_logger().info(
            f"configured: model {source} (step {checkpoint.step}), modalities {list(pipeline.modalities)}, "
            f"backend {pipeline.predictor.backend} on {pipeline.predictor.providers}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.pipeline is not None
        config = self.config
        try:
            # before the sensors are read: every window finished from then on is queued
            self._windows = InferenceQueue(
                self.pipeline.events, self.pipeline.latency, config.node.max_queue_s
            )
            polled = PolledGroup()
            subscriptions = {}
            for name in config.enabled_modalities:
                m = config.modalities[name]
                qos = QoSProfile(
                    history=HistoryPolicy.KEEP_LAST,
                    depth=m.history_depth,
                    reliability=ReliabilityPolicy.BEST_EFFORT
                    if m.qos_reliability == "best_effort"
                    else ReliabilityPolicy.RELIABLE,
                )
                subscriptions[name] = self.create_subscription(
                    MESSAGE_TYPES[m.kind], m.topic, _unused, qos, callback_group=polled
                )
            if config.ground_truth_topic:
                subscriptions[GROUND_TRUTH] = self.create_subscription(
                    PoseStamped, config.ground_truth_topic, _unused, 10, callback_group=polled
                )
            self._subscriptions_held = list(subscriptions.values())
            self._reader = SensorReader(subscriptions, self._on_sensor)
            self._reader.start()
            self._active_timers.append(self.create_timer(IDLE_CHECK_S, self._on_idle))
            if config.train.checkpoint_dir:
                self._active_timers.append(
                    self.create_timer(config.node.checkpoint_period_s, self._checkpoint_in_background)
                )
            self._worker = threading.Thread(
                target=self._infer_loop, args=(self._windows,), name="structalign-inference", daemon=True
            )
            self._worker.start()
            if config.node.finetune:
                self.pipeline.start_finetuning()
        except Exception as exc:
            self._release_active()
            return self._fail("activate", exc)
        self.active = self.live.running = True
        return TransitionCallbackReturn.SUCCESS

    def _release_active(self) -> None:
        if self._reader is not None:
            self._reader.stop()
            self._reader = None
        for sub in self._subscriptions_held:
            self.destroy_subscription(sub)
        for timer in self._active_timers:
            self.destroy_timer(timer)
        self._subscriptions_held, self._active_timers = [], []
        if self._worker is not None and self._windows is not None:
            self._windows.close()  # the worker finishes the windows queued before this
            self._worker.join(10.0)
        self._worker = self._windows = None
        if self.pipeline is not None:
            self.pipeline.pause_finetuning()

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = self.live.running = False
        self._release_active()
        self._checkpoint()
        if self.pipeline is not None:
            report = self.pipeline.report()
            self.get_logger().info(
                f"deactivated after {report['windows']} windows, {report['outputs']} outputs; masked "
                f"{report['masked']}; dropped {report['dropped']}; bad inputs {report['events']}"
            )
        frame = self.config.node.marker_frame
        self._pub["markers"].publish(delete_all(frame, self.get_clock().now().nanoseconds))
        # a shutdown destroys the publisher next: give subscribers a moment to acknowledge the clear
        self._pub["markers"].wait_for_all_acked(Duration(seconds=MARKER_ACK_S))
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        for pub in self._pub.values():
            self.destroy_publisher(pub)
        self._pub = {}
        if self.pipeline is not None:
            self.pipeline.close()
        self.pipeline = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.active:
            self.on_deactivate(state)
        if self.pipeline is not None:
            self.on_cleanup(state)
        return TransitionCallbackReturn.SUCCESS

    # -- data path ----------------------------------------------------------------------------
    def _warn(self, message: str) -> None:
        self.get_logger().warning(message)

    def _on_sensor(self, name: str, msg: Any, arrival: int) -> None:
        pipeline = self.pipeline
        if pipeline is None:
            return
        try:
            if name == GROUND_TRUTH:
                pipeline.on_ground_truth(msg)
            else:
                self._enqueue(pipeline.feed(name, msg, arrival))
        except Exception as exc:  # the node must not die on anything a message does
            pipeline.events.add(f"internal error: {type(exc).__name__}")
            self.get_logger().error(f"{name}: internal error {exc!r}", throttle_duration_sec=5.0)

    def _on_idle(self) -> None:
        pipeline = self.pipeline
        if pipeline is not None:
            self._enqueue(pipeline.idle())

    def _enqueue(self, windows: list[Any]) -> None:
        queued = self._windows
        if queued is not None:
            for window in windows:
                queued.put(window)

    def _infer_loop(self, queued: InferenceQueue) -> None:
        """The inference worker: windows in, outputs published; the executor thread never waits for
        the model, so high-rate sensors keep being read while a window is encoded."""
        while (window := queued.get()) is not None:
            pipeline = self.pipeline
            if pipeline is None:
                continue
            try:
                out = pipeline.infer(window)
                if out is not None:
                    self._publish(pipeline, out)
            except Exception as exc:
                pipeline.events.add(f"internal error: {type(exc).__name__}")
                self.get_logger().error(f"inference: internal error {exc!r}", throttle_duration_sec=5.0)

    def _publish(self, pipeline: PerceptionPipeline, out: WindowOutput) -> None:
        t0 = time.monotonic_ns()
        node = self.config.node
        stamp = time_msg(out.stamp_ns)
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, node.base_frame
        p, q = pose.pose.position, pose.pose.orientation
        p.x, p.y, p.z = (float(v) for v in out.position)
        q.x, q.y, q.z, q.w = (float(v) for v in out.quaternion)
        self._pub["pose"].publish(pose)
        weights = JointState(name=list(out.modalities), position=[float(w) for w in out.weights])
        weights.header.stamp, weights.header.frame_id = stamp, node.base_frame
        self._pub["weights"].publish(weights)
        rows = np.vstack([out.embeddings, out.fused[None]]).astype("<f4")
        emb = Image(height=rows.shape[0], width=rows.shape[1], encoding="32FC1", step=4 * rows.shape[1])
        emb.header.stamp, emb.header.frame_id = stamp, node.base_frame
        emb.data = rows.tobytes()
        self._pub["embeddings"].publish(emb)
        self._pub["markers"].publish(
            weight_markers(
                out.stamp_ns, node.marker_frame, out.modalities, out.weights, out.mask, node.marker_lifetime_s
            )
        )
        done = time.monotonic_ns()
        pipeline.latency.add("publish", (done - t0) * MS)
        if out.arrival_ns is not None:
            pipeline.latency.add("end_to_end", (done - out.arrival_ns) * MS)

    # -- timers and parameters ----------------------------------------------------------------
    def _checkpoint(self) -> None:
        folder, pipeline = self.config.train.checkpoint_dir, self.pipeline
        if not folder or pipeline is None:
            return
        with self._saving:
            try:
                if pipeline.save(Path(folder) / CHECKPOINT):
                    self.get_logger().info(f"checkpoint written to {folder}/{CHECKPOINT}")
            except OSError as exc:
                pipeline.events.add(f"checkpoint: {type(exc).__name__}")
                self.get_logger().error(f"checkpoint failed: {exc}", throttle_duration_sec=30.0)

    def _checkpoint_in_background(self) -> None:
        # writing takes tens of ms; the executor thread must keep reading sensors meanwhile
        if not self._saving.locked():
            threading.Thread(target=self._checkpoint, name="structalign-checkpoint", daemon=True).start()

    def _on_diagnostics(self) -> None:
        pipeline = self.pipeline
        if pipeline is None:
            return
        report = pipeline.report()
        now = time.monotonic()
        events = pipeline.events
        problems = sum(report["masked"].values()) + sum(report["dropped"].values()) + events.total()
        t_last, windows_last, problems_last = self._last_diag
        rate = (report["windows"] - windows_last) / max(now - t_last, 1e-9)
        self._last_diag = (now, report["windows"], problems)
        extra = {
            "backend": pipeline.predictor.backend,
            "device": str(pipeline.predictor.device),
            "model": self.model_source,
        }
        if torch.cuda.is_available():
            extra["cuda_memory_mb"] = torch.cuda.memory_allocated() / 2**20
        self._pub["diagnostics"].publish(
            diagnostic_array(
                self.get_clock().now().nanoseconds,
                self.get_name(),
                report,
                rate,
                problems - problems_last,
                self.active,
                extra,
                bad=events.by_code(),
                latest_bad=events.latest,
            )
        )

    def _apply_live(self, config: StructAlignConfig) -> None:
        before, self.config = self.config, config
        pipeline = self.pipeline
        if pipeline is None:
            return
        pipeline.apply_config(config)
        if self.active and config.node.finetune != before.node.finetune:
            if config.node.finetune:
                pipeline.start_finetuning()
            else:
                pipeline.pause_finetuning()


def autostart(node: PerceptionNode) -> bool:
    """Configure and activate ``node`` (no lifecycle manager is needed); False if either failed."""
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        return False
    return node.trigger_activate() == TransitionCallbackReturn.SUCCESS


def responsive_threads() -> None:
    """Hand Python's interpreter lock between threads every 1 ms instead of 5 ms: the sensor reader
    must not wait a whole default switch interval behind the inference worker."""
    sys.setswitchinterval(0.001)


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (``ros2 launch`` sends SIGINT, then SIGTERM after 5 s).

    rclpy's own handlers must be off (``SignalHandlerOptions.NO``): they shut the context down
    before the node has deactivated, under its sensor reader and inference worker.
    """
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def main(args: list[str] | None = None) -> int:
    """``ros2 run structalign_ros perception_node [--ros-args --params-file FILE]``: configures and
    activates itself; a failed configure leaves the node up (unconfigured) for a lifecycle manager.

    SIGINT and SIGTERM stop it in order: deactivate (sensor reader and worker stopped, fine-tuning
    paused, a final checkpoint, DELETEALL for the chart), clean up, destroy, then rclpy; exit code 0.
    """
    responsive_threads()
    stop = stop_on_signals()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = PerceptionNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        autostart(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        try:
            node.trigger_shutdown()
        except Exception as exc:  # already finalized
            node.get_logger().debug(f"shutdown: {exc}")
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
