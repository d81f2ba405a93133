"""Perception node benchmark (issue 5): end-to-end latency with all six modalities over real DDS.

For each arm (backend torch | onnx × fine-tuning off | on) the perception node runs as a separate
process (``structalign run --config FILE`` by default, or ``perception_node --ros-args --params-file
FILE`` with ``--launcher node``) while this process publishes simulated sensor data in real time and
subscribes to the node's outputs:

1. once, before any arm: ``--warmup + --seconds`` of the simulated robot (``core/sim``: 30 Hz RGB and
   aligned depth 128x128, 1 kHz F/T, 200 Hz IMU, 100 Hz 4x4 tactile, 200 Hz joints, 100 Hz ground-truth
   end-effector pose) are rendered into memory and converted to rclpy messages (``messages.to_rclpy``),
   so no simulation runs while measuring;
2. per arm: start the node, wait until it subscribes to every sensor topic, then publish the messages
   paced against the wall clock (stamps = the ROS clock at the start + simulated time), record the
   monotonic time right after each camera frame is published, and the monotonic time each
   ``/structalign_perception/ee_pose`` arrives. Latency of a window = arrival of the output stamped
   ``t`` − publication of the camera frame stamped ``t`` (one clock, one process: DDS both ways
   included). A camera frame of the measured period without an output is a dropped window. The first
   ``--warmup`` seconds (model load, first inferences, the online trainer's replay fill) are not
   measured; after the last message the node gets ``--drain`` seconds to answer.

Before any arm, the bench prints the window rule's own floor (:func:`window_floor_ms`): how long after
a camera frame the data that completes its window exists at all.

Also read from the node's outputs: the last ``modality_weights`` (λ), the end-effector position error
of ``ee_pose`` against the simulated ground truth nearest in time, and from ``/diagnostics`` the
fine-tuning steps taken during the arm and the node's own per-stage latency percentiles (where the time
goes inside the node).

Run inside the private network namespace::

    tools/netns-run .venv/bin/python bench/bench_node.py [--seconds 60] [--arms onnx:on,torch:off]

Prints a table per arm, then one JSON line
``{"seconds", "load_avg", "window_floor_ms": {"p50", "p99"}, "arms": [{"backend", "finetune", "windows",
"dropped", "latency_ms": {"p50", "p95", "p99"}, "weights": {modality: λ}, "ee_pos_err_mm", "finetune_steps",
"node_latency_ms": {stage: p50}, "publisher_late_max_ms", "publisher_late_frac", "node_counts"}, ...]}``:
the demo's keys plus the backend, one object per arm in ``--arms`` order. Targets (2-core CPU, ONNX
Runtime, fine-tuning on): 0 dropped windows, p50 ≤ 20 ms, p99 ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from structalign_ros.core.config import FRAME_KINDS, StructAlignConfig
from structalign_ros.core.config_io import save_yaml
from structalign_ros.core.sim.record import reading_to_msg, topics_by_kind
from structalign_ros.core.sim.robot import SimRobot

NODE = "structalign_perception"
OUTPUT_POSE = f"/{NODE}/ee_pose"
OUTPUT_WEIGHTS = f"/{NODE}/modality_weights"
START_TIMEOUT_S = 180.0  # configure may export the model to ONNX first
LATE_MS = 5.0  # a message published this long after its due time counts as late


@dataclass
class Stream:
    """Pre-rendered sensor data: ``(sim_ns, topic, rclpy message)`` in time order, the camera topic,
    and the ground-truth end-effector positions by simulated stamp."""

    messages: list[tuple[int, str, Any]]
    camera_topic: str
    truth_ns: np.ndarray  # (N,) simulated ns
    truth_pos: np.ndarray  # (N, 3) metres


def render(config: StructAlignConfig, seed: int, seconds: float, ground_truth: bool) -> Stream:
    from structalign_ros.ros.messages import to_rclpy

    topics = topics_by_kind(config)
    camera = config.modalities[config.window.pivot].topic
    messages, truth_ns, truth_pos = [], [], []
    robot = SimRobot(config, seed)
    try:
        for reading in robot.run(seconds):
            if reading.kind == "object_pose":
                continue
            if reading.kind == "ee_pose":
                truth_ns.append(reading.stamp_ns)
                truth_pos.append(reading.value[:3])
                if not ground_truth:
                    continue
            messages.append(
                (reading.stamp_ns, topics[reading.kind], to_rclpy(reading_to_msg(reading, config)))
            )
    finally:
        robot.close()
    return Stream(messages, camera, np.array(truth_ns), np.array(truth_pos))


def window_floor_ms(stream: Stream, config: StructAlignConfig) -> np.ndarray:
    """Per camera frame, how long after it the window rule itself lets its window complete (ms).

    A series stream (F/T, IMU, joints, tactile) contributes to the window of pivot ``t`` with its first
    sample later than ``t + window.reorder_s`` (``core/data/windows.py``), so no node, however fast, can
    publish before the slowest of those samples exists. Data time only: no compute, no transport.
    """
    series = {m.topic for m in config.modalities.values() if m.enabled and m.kind not in FRAME_KINDS}
    stamps: dict[str, list[int]] = {t: [] for t in series | {stream.camera_topic}}
    for sim_ns, topic, _ in stream.messages:
        if topic in stamps:
            stamps[topic].append(sim_ns)
    pivots = np.array(stamps.pop(stream.camera_topic))
    reorder = round(config.window.reorder_s * 1e9)
    wait = np.zeros(len(pivots))
    for values in stamps.values():
        arr = np.array(values)
        idx = np.minimum(np.searchsorted(arr, pivots + reorder, side="right"), len(arr) - 1)
        wait = np.maximum(wait, arr[idx] - pivots)
    return wait[pivots + reorder < min(v[-1] for v in stamps.values())] / 1e6


@dataclass
class ArmResult:
    backend: str
    finetune: bool
    windows: int = 0
    dropped: int = 0
    latency_ms: list[float] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    ee_pos_err_mm: float | None = None
    finetune_steps: int | None = None
    node_latency_ms: dict[str, float] = field(default_factory=dict)
    publisher_late_max_ms: float = 0.0
    publisher_late_frac: float = 0.0
    node_counts: dict[str, int] = field(default_factory=dict)  # masked/dropped/bad, last diagnostics
    error: str = ""

    def percentiles(self) -> dict[str, float | None]:
        if not self.latency_ms:
            return {"p50": None, "p95": None, "p99": None}
        p50, p95, p99 = np.percentile(self.latency_ms, [50, 95, 99])
        return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2)}

    def summary(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "finetune": self.finetune,
            "windows": self.windows,
            "dropped": self.dropped,
            "latency_ms": self.percentiles(),
            "weights": {k: round(v, 4) for k, v in self.weights.items()},
            "ee_pos_err_mm": None if self.ee_pos_err_mm is None else round(self.ee_pos_err_mm, 2),
            "finetune_steps": self.finetune_steps,
            "node_latency_ms": {k: round(v, 2) for k, v in self.node_latency_ms.items()},
            "publisher_late_max_ms": round(self.publisher_late_max_ms, 2),
            "publisher_late_frac": round(self.publisher_late_frac, 4),
            "node_counts": self.node_counts,
            **({"error": self.error} if self.error else {}),
        }


class Bench:
    """The publishing and collecting side: one rclpy node in this process."""

    def __init__(self, config: StructAlignConfig) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import JointState

        from structalign_ros.ros.messages import rclpy_class
        from structalign_ros.ros.sim_node import MSG_TYPES, QOS

        self.node = Node("structalign_bench", start_parameter_services=False)
        topics = topics_by_kind(config)
        self.sensor_topics = [config.modalities[n].topic for n in config.enabled_modalities]
        self.pubs = {
            topic: self.node.create_publisher(rclpy_class(MSG_TYPES[kind]), topic, QOS)
            for kind, topic in topics.items()
            if kind != "object_pose"
        }
        self.lock = threading.Lock()
        self.outputs: dict[int, tuple[int, np.ndarray]] = {}  # stamp -> (arrival mono ns, position)
        self.weights: dict[str, float] = {}
        self.diagnostics: list[dict[str, str]] = []
        self.node.create_subscription(PoseStamped, OUTPUT_POSE, self._on_pose, 100)
        self.node.create_subscription(JointState, OUTPUT_WEIGHTS, self._on_weights, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, name="bench-executor", daemon=True)
        self.thread.start()

    def _on_pose(self, msg: Any) -> None:
        arrival = time.monotonic_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        p = msg.pose.position
        with self.lock:
            self.outputs[stamp] = (arrival, np.array([p.x, p.y, p.z]))

    def _on_weights(self, msg: Any) -> None:
        with self.lock:
            self.weights = dict(zip(msg.name, (float(v) for v in msg.position), strict=False))

    def _on_diagnostics(self, msg: Any) -> None:
        values = {}
        for status in msg.status:
            if status.name.startswith(f"{NODE}:"):
                part = status.name.split(":", 1)[1].strip()
                values.update({f"{part}/{kv.key}": kv.value for kv in status.values})
        if values:
            with self.lock:
                self.diagnostics.append(values)

    def reset(self) -> None:
        with self.lock:
            self.outputs, self.weights, self.diagnostics = {}, {}, []

    def wait_for_node(self, proc: subprocess.Popen[bytes], timeout: float) -> bool:
        """Until the node subscribes to every sensor topic and publishes its pose (it is active)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            subscribed = all(self.node.count_subscribers(t) > 0 for t in self.sensor_topics)
            if subscribed and self.node.count_publishers(OUTPUT_POSE) > 0:
                return True
            time.sleep(0.1)
        return False

    def publish(self, stream: Stream, base_ns: int) -> tuple[dict[int, int], float, float]:
        """Publish ``stream`` in real time from now. Returns the camera publish times by stamp, the
        most any message went out after its due time (ms), and the fraction of messages more than
        :data:`LATE_MS` late (a busy machine delays this publisher too; late messages go out in a
        burst, which the node then has to absorb)."""
        from structalign_ros.ros.messages import time_msg

        camera: dict[int, int] = {}
        camera_lag: dict[int, float] = {}  # ms the camera frame went out after its due time
        late_max, late = 0.0, 0
        wall0 = time.monotonic()
        first = stream.messages[0][0]
        for sim_ns, topic, msg in stream.messages:
            due = wall0 + (sim_ns - first) / 1e9
            lag = time.monotonic() - due
            if lag < 0:
                time.sleep(-lag)
            else:
                late_max = max(late_max, lag)
                late += lag * 1e3 > LATE_MS
            msg.header.stamp = time_msg(base_ns + sim_ns)
            self.pubs[topic].publish(msg)
            if topic == stream.camera_topic:
                camera[base_ns + sim_ns] = time.monotonic_ns()
                camera_lag[base_ns + sim_ns] = max(lag, 0.0) * 1e3
        return camera, camera_lag, late_max * 1e3, late / len(stream.messages)

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(5.0)
        self.node.destroy_node()


def node_command(launcher: str, params: Path) -> list[str]:
    """``structalign run`` (the perception graph in one process) or the node's own console script."""
    if launcher == "run":
        args = "-m structalign_ros.cli run --graph perception --config"
    else:
        args = "-m structalign_ros.ros.perception_node --ros-args --params-file"
    return [sys.executable, *args.split(), str(params)]


def _stage_p50(diag: dict[str, str]) -> dict[str, float]:
    out = {}
    for key, value in diag.items():
        if key.startswith("windows/latency_ms.") and key.endswith(".p50"):
            out[key[len("windows/latency_ms.") : -len(".p50")]] = float(value)
    return out


def _counts(diag: dict[str, str]) -> dict[str, int]:
    """The node's masked windows, dropped messages and counted faults, by modality or reason."""
    prefixes = ("windows/masked.", "windows/dropped.", "windows/bad.")
    return {
        key.split("/", 1)[1]: int(float(value)) for key, value in diag.items() if key.startswith(prefixes)
    }


def _steps(diag: dict[str, str]) -> int | None:
    value = diag.get("fine-tuning/steps")
    return int(float(value)) if value is not None else None


def run_arm(
    bench: Bench,
    stream: Stream,
    config: StructAlignConfig,
    backend: str,
    finetune: bool,
    args: argparse.Namespace,
    workdir: Path,
) -> ArmResult:
    result = ArmResult(backend, finetune)
    config.runtime.backend = backend
    config.node.finetune = finetune
    params = workdir / f"{backend}_{'on' if finetune else 'off'}.yaml"
    save_yaml(config, params)
    log = open(workdir / f"{params.stem}.log", "wb")
    bench.reset()
    proc = subprocess.Popen(node_command(args.launcher, params), stdout=log, stderr=subprocess.STDOUT)
    try:
        if not bench.wait_for_node(proc, START_TIMEOUT_S):
            result.error = f"the node did not become active (exit {proc.poll()}); see {log.name}"
            return result
        base_ns = bench.node.get_clock().now().nanoseconds
        camera, camera_lag, result.publisher_late_max_ms, result.publisher_late_frac = bench.publish(
            stream, base_ns
        )
        time.sleep(args.drain)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    first = stream.messages[0][0]
    measured_from = base_ns + first + round(args.warmup * 1e9)
    with bench.lock:
        outputs, weights, diagnostics = dict(bench.outputs), dict(bench.weights), list(bench.diagnostics)
    errors = []
    timeline = ["seconds,measured,publisher_lag_ms,latency_ms"]  # one row per camera frame; empty = dropped
    for stamp, sent in sorted(camera.items()):
        measured = stamp >= measured_from
        row = f"{(stamp - base_ns - first) / 1e9:.3f},{int(measured)},{camera_lag[stamp]:.2f},"
        if stamp in outputs:
            row += f"{(outputs[stamp][0] - sent) / 1e6:.2f}"
        timeline.append(row)
        if not measured:
            continue
        result.windows += 1
        if stamp not in outputs:
            result.dropped += 1
            continue
        arrival, position = outputs[stamp]
        result.latency_ms.append((arrival - sent) / 1e6)
        nearest = np.abs(stream.truth_ns + base_ns - stamp).argmin()
        errors.append(np.linalg.norm(position - stream.truth_pos[nearest]) * 1e3)
    (workdir / f"{params.stem}.windows.csv").write_text("\n".join(timeline) + "\n")
    result.weights = weights
    result.ee_pos_err_mm = float(np.mean(errors)) if errors else None
    if diagnostics:
        steps = [s for s in map(_steps, diagnostics) if s is not None]
        result.finetune_steps = steps[-1] - steps[0] if steps else None
        result.node_latency_ms = _stage_p50(diagnostics[-1])
        result.node_counts = _counts(diagnostics[-1])
    return result


def print_table(results: list[ArmResult]) -> None:
    columns = "arm|windows|dropped|p50 ms|p95 ms|p99 ms|fine-tune steps|EE err mm|node p50 per stage ms"
    print("| " + columns.replace("|", " | ") + " |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        pct = r.percentiles()
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r.node_latency_ms.items())
        err = "–" if r.ee_pos_err_mm is None else f"{r.ee_pos_err_mm:.1f}"
        cells = [
            f"{r.backend}, fine-tune {'on' if r.finetune else 'off'}",
            str(r.windows),
            str(r.dropped),
            *("–" if pct[q] is None else f"{pct[q]:.1f}" for q in ("p50", "p95", "p99")),
            "–" if r.finetune_steps is None else str(r.finetune_steps),
            err,
            stages or (r.error or "–"),
        ]
        print("| " + " | ".join(cells) + " |")
    for r in results:
        arm = f"{r.backend}, fine-tune {'on' if r.finetune else 'off'}"
        print(
            f"publisher ({arm}): {100 * r.publisher_late_frac:.1f} % of messages > {LATE_MS:g} ms late, "
            f"max {r.publisher_late_max_ms:.0f} ms"
        )
        if r.node_counts:
            print(f"node counts ({arm}): {r.node_counts}")
        if r.weights:
            print(f"λ ({arm}): " + ", ".join(f"{k} {v:.3f}" for k, v in r.weights.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per arm")
    parser.add_argument("--warmup", type=float, default=10.0, help="unmeasured seconds before them")
    parser.add_argument("--drain", type=float, default=2.0, help="wait for outputs after the last message")
    parser.add_argument(
        "--arms",
        default="torch:off,torch:on,onnx:off,onnx:on",
        help="comma-separated backend:finetune pairs, in run order",
    )
    parser.add_argument(
        "--launcher",
        choices=("run", "node"),
        default="run",
        help="structalign run --config FILE, or perception_node --ros-args --params-file FILE",
    )
    parser.add_argument("--config", default=None, help="parameter file to start from (default: built-in)")
    parser.add_argument("--model", default="", help="checkpoint for node.model (default: the node's default)")
    parser.add_argument("--threads", type=int, default=1, help="runtime.threads of the node")
    parser.add_argument("--seed", type=int, default=0, help="simulated episode")
    parser.add_argument(
        "--no-ground-truth",
        action="store_true",
        help="do not publish the ground-truth EE pose to the node (error is still computed)",
    )
    parser.add_argument(
        "--keep",
        default="",
        help="keep parameter files, node logs and per-window timelines (ARM.windows.csv) in this folder",
    )
    args = parser.parse_args()

    import rclpy

    from structalign_ros.core.config_io import load_yaml
    from structalign_ros.ros.perception_node import responsive_threads

    arms = []
    for item in args.arms.split(","):
        backend, _, ft = item.strip().partition(":")
        arms.append((backend, ft == "on"))
    config = load_yaml(args.config, NODE) if args.config else StructAlignConfig()
    config.runtime.threads = args.threads
    if args.model:
        config.node.model = str(Path(args.model).resolve())

    t0 = time.perf_counter()
    stream = render(config, args.seed, args.warmup + args.seconds, not args.no_ground_truth)
    if args.no_ground_truth:  # the node is not told of it (the stream keeps it, for scoring)
        config.ground_truth_topic = ""
    gc.freeze()  # a full collection over the rendered messages would stall the publisher for ~0.5 s
    print(
        f"rendered {len(stream.messages)} messages ({args.warmup + args.seconds:g} s) in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    floor = window_floor_ms(stream, config)
    floor_pct = {q: round(float(np.percentile(floor, int(q[1:]))), 2) for q in ("p50", "p99")}
    print(
        f"window rule floor (reorder_s={config.window.reorder_s:g} s): p50 {floor_pct['p50']:.1f} ms, "
        f"p99 {floor_pct['p99']:.1f} ms",
        flush=True,
    )

    responsive_threads()  # the same GIL switch interval as the node: publisher and collector share it
    rclpy.init()
    bench = Bench(config)
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_node_"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for backend, finetune in arms:
            print(f"arm {backend}, fine-tune {'on' if finetune else 'off'} ...", flush=True)
            results.append(run_arm(bench, stream, config, backend, finetune, args, workdir))
            if results[-1].error:
                print(f"  {results[-1].error}", flush=True)
    finally:
        bench.close()
        rclpy.try_shutdown()
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; node logs in {workdir}")
    print_table(results)
    print(
        json.dumps(
            {
                "seconds": args.seconds,
                "load_avg": [round(v, 2) for v in load],
                "window_floor_ms": floor_pct,
                "arms": [r.summary() for r in results],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
