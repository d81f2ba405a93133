"""``structalign demo``: the whole suite on the simulated robot, with a summary, a JSON line and plots.

The ``sim_demo`` graph (:mod:`structalign_ros.ros.graph`): the MuJoCo robot (``sim_node``) runs in a
child process, as a robot's drivers would, and publishes every sensor and the true end-effector pose
in real time; the perception node (the shipped default model, fine-tuning on) runs in this process and
windows, encodes and publishes. (``structalign run --graph sim_demo`` runs both in one process; on two
cores the simulator and the node then share one Python interpreter lock, and the simulation fell to a
third of real time under load.) A monitor subscribes to what the node
publishes, exactly as a user's tool would, and scores the published pose against the ground truth
with the same stamp. At the end: a table, plots (lambda over time, EE error over time, latency
histogram) in the run folder, and one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from structalign_ros.commands.options import add_set_argument
from structalign_ros.commands.play import add_fault_arguments, resolve_fault
from structalign_ros.core.config import ConfigError, FaultConfig, StructAlignConfig
from structalign_ros.core.eval.live import PoseScorer, WeightTrace


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    parser.add_argument("--config", default=None, help="ROS parameter file (default: built-in config)")
    add_set_argument(parser)  # both nodes get them, over the file's values
    parser.add_argument("--out", default=None, help="run folder for the plots (default runs/demo-<time>)")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    # the fault options of structalign sim/play, with a camera blackout scheduled so that the weights'
    # response shows ("--fault none": no fault)
    add_fault_arguments(parser, topic=False)
    parser.set_defaults(fault="rgb:blackout", fault_start=25.0, fault_stop=40.0)
    parser.epilog = "the demo's fault defaults: --fault rgb:blackout --fault-start 25 --fault-stop 40"


class Monitor:
    """Subscribes to the node's pose and weights and to the ground truth, and records them for scoring
    (:mod:`core.eval.live`: compact, so that a long run measures the node's memory, not this)."""

    def __init__(self, node: Any, gt_topic: str, prefix: str) -> None:
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import JointState

        from structalign_ros.ros.messages import stamp_of

        self._stamp = stamp_of
        self.lock = threading.Lock()
        self.scorer = PoseScorer()
        self.weights = WeightTrace()
        node.create_subscription(PoseStamped, f"{prefix}/ee_pose", self._on_pose, 50)
        node.create_subscription(PoseStamped, gt_topic, self._on_truth, 200)
        node.create_subscription(JointState, f"{prefix}/modality_weights", self._on_weights, 50)

    @staticmethod
    def _pose(msg: Any) -> np.ndarray:
        p, q = msg.pose.position, msg.pose.orientation
        return np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w])

    def _on_pose(self, msg: Any) -> None:
        with self.lock:
            self.scorer.add_pose(self._stamp(msg.header.stamp), self._pose(msg))

    def _on_truth(self, msg: Any) -> None:
        with self.lock:
            self.scorer.add_truth(self._stamp(msg.header.stamp), self._pose(msg))

    def _on_weights(self, msg: Any) -> None:
        with self.lock:
            self.weights.add(
                time.monotonic(), self._stamp(msg.header.stamp), list(msg.name), list(msg.position)
            )

    def now_ns(self) -> int:
        """The newest ground-truth stamp (simulated time; 0 before any)."""
        with self.lock:
            return self.scorer.newest_truth_ns

    def weight_series(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """(modality names, arrival times s, stamps ns, weights ``(n, M)``) of every weight message."""
        with self.lock:
            return (list(self.weights.names), *self.weights.series())

    def realtime_factor(self) -> float | None:
        """Simulated seconds per wall second, from the stamps and arrival times of the outputs."""
        _, received, stamps, _ = self.weight_series()
        if len(received) < 2:
            return None
        return round((stamps[-1] - stamps[0]) * 1e-9 / max(received[-1] - received[0], 1e-9), 2)

    def errors(self) -> np.ndarray:
        """``(n, 3)``: stamp (s), position error (mm), orientation error (deg) of every scored output."""
        with self.lock:
            return self.scorer.errors()

    @property
    def nbytes(self) -> int:
        """Bytes the recorded series hold (they grow with the run, in the node's process)."""
        with self.lock:
            return self.scorer.nbytes + self.weights.nbytes


def fault_parameters(fault: FaultConfig | None) -> list[str]:
    """``fault`` as the simulator node's ``-p sim.fault.*`` arguments ([] for none)."""
    if fault is None:
        return []
    values = dataclasses.asdict(fault)
    return [arg for key, value in values.items() for arg in ("-p", f"sim.fault.{key}:={value}")]


def _plots(
    folder: Path,
    monitor: Monitor,
    errors: np.ndarray,
    latency_ms: np.ndarray,
    fault: FaultConfig | None,
    fault_label: str,
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    names, _, stamps, lam = monitor.weight_series()
    figures = []
    if len(stamps):
        t = (stamps - stamps[0]) * 1e-9
        fig, ax = plt.subplots(figsize=(8, 4))
        for m, name in enumerate(names):
            ax.plot(t, lam[:, m], label=name, lw=1)
        if fault is not None:
            stop = fault.stop_s if fault.stop_s > 0 else t[-1]
            ax.axvspan(fault.start_s, stop, color="grey", alpha=0.2, label=f"fault {fault_label}")
        ax.set(xlabel="time (s)", ylabel="λ × trust (per window)", title="Modality weights")
        ax.legend(ncol=3, fontsize=8)
        figures.append(("weights.png", fig))
    if len(errors):
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot(errors[:, 0] - errors[0, 0], errors[:, 1], lw=1)
        ax.set(xlabel="time (s)", ylabel="position error (mm)", title="End-effector pose error")
        figures.append(("ee_error.png", fig))
    if len(latency_ms):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.hist(latency_ms, bins=50)
        ax.set(xlabel="pivot frame arrival -> outputs published (ms)", ylabel="windows", title="Latency")
        figures.append(("latency.png", fig))
    for name, fig in figures:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
    return [name for name, _ in figures]


def run(args: argparse.Namespace) -> int:
    import rclpy

    from structalign_ros.core.config_io import config_from_values, load_yaml, parse_assignments, save_values
    from structalign_ros.ros.run import StartError

    say = (lambda *a: None) if args.json else print
    overrides = parse_assignments(args.set)  # a bad key or value exits 1 with its message (cli.main)
    config = config_from_values(overrides, load_yaml(args.config) if args.config else StructAlignConfig())
    if args.fault == "none":
        args.fault = ""
    try:
        fault, _ = resolve_fault(args, config)
    except ConfigError as exc:
        print(f"structalign demo: {exc}", file=sys.stderr)
        return 2
    folder = Path(args.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    rclpy.init()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        sim_args = fault_parameters(fault)
        if overrides:  # the simulator process reads them from a second parameter file
            save_values(overrides, folder / "set.yaml")
            sim_args = ["--params-file", str(folder / "set.yaml"), *sim_args]
        try:
            with demo_graph(config, args.config, folder / "sim.log", sim_args, overrides) as demo:
                node, monitor = demo.node, demo.monitor
                say(
                    f"running the simulated robot and the suite for {args.seconds:.0f} s "
                    f"(model {node.model_source}, backend {node.pipeline.predictor.backend})"
                )
                start = time.monotonic()
                # the report counts all steps behind the weights, the checkpoint's too; show this run's
                before = node.pipeline.checkpoint_step
                while (left := args.seconds - (time.monotonic() - start)) > 0:
                    time.sleep(min(10.0, left))
                    report = node.pipeline.report()
                    say(
                        f"  {time.monotonic() - start:5.0f} s: {report['outputs']} windows, "
                        f"fine-tune steps {report['finetune']['steps'] - before}"
                    )
                report = node.pipeline.report()
                steps = report["finetune"]["steps"] - before
                latency = node.pipeline.latency.samples("end_to_end")
                learned = {n: round(v, 4) for n, v in node.pipeline.learned_weights().items()}
        except StartError as exc:
            print(f"structalign demo: {exc}", file=sys.stderr)
            return 1
        errors = monitor.errors()
        written = _plots(folder, monitor, errors, latency, fault, args.fault)
    finally:
        rclpy.try_shutdown()
    p50, p99 = (float(np.percentile(latency, q)) for q in (50, 99)) if len(latency) else (None, None)
    summary = {
        "windows": report["windows"],
        "dropped": report["windows_dropped"],
        "latency_ms": {"p50": _round(p50), "p99": _round(p99)},
        "weights": learned,
        "ee_pos_err_mm": _round(float(errors[:, 1].mean()) if len(errors) else None),
        "ee_rot_err_deg": _round(float(errors[:, 2].mean()) if len(errors) else None),
        "finetune_steps": steps,
        "finetune_accepted": report["finetune"]["accepted"],
        "finetune_rejected": report["finetune"]["rejected"],
        "sim_realtime_factor": monitor.realtime_factor(),
        "fault": args.fault or "none",
    }
    say("")
    say(f"{'windows':<28}{summary['windows']}")
    say(f"{'dropped windows':<28}{summary['dropped']}")
    reasons = ", ".join(f"{k} {v}" for k, v in report["masked"].items())
    say(f"{'masked modality entries':<28}{sum(report['masked'].values())}  ({reasons})")
    say(f"{'simulation speed':<28}{summary['sim_realtime_factor']}x real time")
    say(f"{'latency p50 / p99 (ms)':<28}{summary['latency_ms']['p50']} / {summary['latency_ms']['p99']}")
    stages = ", ".join(f"{k} {v['p50']:.1f}" for k, v in report["latency_ms"].items() if k != "end_to_end")
    say(f"{'  stage p50 (ms)':<28}{stages}")
    for name, value in learned.items():
        say(f"{'λ ' + name:<28}{value}")
    say(f"{'EE position error (mm)':<28}{summary['ee_pos_err_mm']}  ({len(errors)} windows scored)")
    say(f"{'EE orientation error (deg)':<28}{summary['ee_rot_err_deg']}")
    say(f"{'fine-tune steps':<28}{summary['finetune_steps']}")
    say(
        f"{'fine-tune offers':<28}{summary['finetune_accepted']} accepted, "
        f"{summary['finetune_rejected']} rejected ({report['finetune']['verdict'] or 'none judged'})"
    )
    if fault is not None:
        say(f"{'fault (simulator)':<28}{args.fault} from {fault.start_s:g} s to {fault.stop_s:g} s")
    say(f"plots: {', '.join(str(folder / w) for w in written)}")
    print(json.dumps(summary))
    return 0


@dataclasses.dataclass
class DemoGraph:
    """The running ``sim_demo`` graph: the perception node (in this process), the monitor, the node it
    spins on (``probe``, for further clients) and the simulator node's name."""

    node: Any
    monitor: Monitor
    probe: Any
    simulator: str


@contextlib.contextmanager
def demo_graph(
    config: StructAlignConfig,
    config_file: str | Path | None,
    log: Path,
    sim_args: list[str],
    overrides: dict[str, Any] | None = None,
) -> Iterator[DemoGraph]:
    """Run the ``sim_demo`` graph on ``config_file`` (None: built-in defaults) and the perception
    node's ``overrides`` (dotted names; ``config`` must be what they make): the perception node in
    this process, the simulator as a child process (its output to ``log``, ``sim_args`` its extra ROS
    arguments). rclpy must be initialised by the caller.

    Raises:
        StartError: the perception node failed to start.
    """
    from rclpy.node import Node

    from structalign_ros.ros.graph import graph
    from structalign_ros.ros.perception_node import NAME
    from structalign_ros.ros.run import running

    probe = Node("structalign_demo_monitor")
    try:
        monitor = Monitor(probe, config.ground_truth_topic, f"/{NAME}")
        specs = graph("sim_demo")
        simulator = next(s for s in specs if not s.lifecycle)
        with running([s for s in specs if s.lifecycle], config_file, [probe], overrides) as nodes:
            sim = start_simulator(simulator.executable, config_file, log, sim_args)
            try:
                yield DemoGraph(nodes[NAME], monitor, probe, simulator.name)
            finally:
                stop_simulator(sim)
    finally:
        probe.destroy_node()


def start_simulator(
    executable: str, config_file: str | Path | None, log: Path, extra: list[str]
) -> subprocess.Popen:
    """The simulated robot as a child process with the same parameter file (and ``extra`` ROS args)."""
    command = [sys.executable, "-m", f"structalign_ros.ros.{executable}", "--ros-args"]
    if config_file:
        command += ["--params-file", str(config_file)]
    command += extra
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)


def stop_simulator(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
