"""Soak benchmark (issue 12): the ``sim_demo`` graph with fine-tuning, watched from outside for minutes.

The two executables a launch file starts run as separate processes, as installed console scripts:
``sim_node`` (the MuJoCo robot publishing every sensor and the ground truth in real time) and
``perception_node --ros-args --params-file FILE`` (the default config and shipped model, fine-tuning
on, learning from and scored against the simulated ground-truth pose, checkpointing to a temporary
folder every ``node.checkpoint_period_s``). This process subscribes to ``/diagnostics`` and, every
``--interval`` seconds, samples the perception node's process from ``/proc``:

- resident memory (``VmRSS``) of the node and of its online-trainer child process;
- open file descriptors (``/proc/PID/fd``) and threads (``Threads``) of the node;
- the newest ``/diagnostics`` array: its serialised size in bytes and the number of key/values;
- windows and outputs (from diagnostics).

At the end the simulator is stopped first and the node given ``--drain`` seconds to finish what is in
flight, then dropped windows = windows − outputs from its last report (windows dropped because
inference fell behind, or skipped). Both processes are then sent SIGINT and must exit 0.

Targets: RSS growth ≤ 5 % from the sample at ``--baseline-min`` minutes (2; for runs shorter than twice
that, half the run) to the end, 0 dropped windows, descriptors and threads at the end no more than at
the baseline, a diagnostics size that does not grow.

Run inside the private network namespace::

    tools/netns-run .venv/bin/python bench/bench_soak.py [--minutes 2] [--interval 5] [--out runs/soak]

Prints a table (one row per sample) and a summary, writes ``soak.png`` and ``soak.csv`` to ``--out``,
and ends with one JSON line: ``{"minutes", "load_avg_start", "load_avg_end", "samples", "baseline_s",
"rss_mb": {"start", "baseline", "end", "max"}, "rss_growth_pct", "trainer_rss_mb": {"baseline", "end"},
"fds": {"baseline", "end", "max"}, "threads": {"baseline", "end", "max"}, "diag_bytes": {"baseline",
"end", "max"}, "diag_keys": {"baseline", "end"}, "windows", "outputs", "dropped_windows",
"finetune_steps", "exit_codes": {"sim_node", "perception_node"}, "targets_met"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.config_io import from_dict, save_yaml, to_dict

NODE = "structalign_perception"
START_TIMEOUT_S = 180.0  # a node that has not reported by then failed to configure (see its log)


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    trainer_rss_mb: float
    fds: int
    threads: int
    diag_bytes: int
    diag_keys: int
    windows: int
    outputs: int
    finetune_steps: int
    accepted: int  # fine-tuned weights the guard let through (each one a new inference session)


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _rss_mb(pid: int) -> float:
    try:
        return int(_status(pid)["VmRSS"].split()[0]) / 1024
    except (OSError, KeyError):
        return 0.0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


class DiagnosticsWatch:
    """Keeps the newest ``/diagnostics`` array of the perception node (from its own thread)."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.node = Node("soak_watch")
        self.latest: Any = None
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, args=(rclpy,), daemon=True)
        self._thread.start()

    def _spin(self, rclpy: Any) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while rclpy.ok():
                self.executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass

    def _on(self, msg: Any) -> None:
        if any(s.name.startswith(f"{NODE}:") for s in msg.status):
            self.latest = msg

    def values(self) -> tuple[int, int, dict[str, str]]:
        """``(serialised bytes, key/values, {status suffix/key: value})`` of the newest array."""
        from rclpy.serialization import serialize_message

        msg = self.latest
        if msg is None:
            return 0, 0, {}
        flat = {}
        for status in msg.status:
            suffix = status.name.split(": ", 1)[-1]
            for kv in status.values:
                flat[f"{suffix}/{kv.key}"] = kv.value
        return len(serialize_message(msg)), len(flat), flat


def _params(folder: Path) -> Path:
    data = to_dict(StructAlignConfig())
    data["node"].update({"finetune": True})  # ground_truth_topic: the simulator's, the default
    data["train"].update({"checkpoint_dir": str(folder / "ckpt")})
    path = folder / "params.yaml"
    save_yaml(from_dict(data), path)
    return path


def _stop(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def _plot(samples: list[Sample], baseline_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s / 60 for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    series = (
        ("resident memory (MiB)", [s.rss_mb for s in samples], [s.trainer_rss_mb for s in samples]),
        ("open file descriptors", [s.fds for s in samples], None),
        ("threads", [s.threads for s in samples], None),
        ("/diagnostics array (bytes)", [s.diag_bytes for s in samples], None),
    )
    for ax, (title, ys, extra) in zip(axes.flat, series, strict=True):
        ax.plot(t, ys, label="perception node")
        if extra is not None:
            ax.plot(t, extra, label="online trainer")
            ax.legend(fontsize=8)
        ax.axvline(baseline_s / 60, color="grey", linestyle=":", linewidth=1)
        ax.set_title(title, fontsize=9)
    for ax in axes[1]:
        ax.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="how long the graph runs (default 2)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--baseline-min", type=float, default=2.0, help="growth is measured from here")
    parser.add_argument("--drain", type=float, default=3.0, help="seconds after the simulator stops")
    parser.add_argument("--out", default="runs/soak", help="folder for soak.png and soak.csv")
    args = parser.parse_args()

    import rclpy

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    load_start = os.getloadavg()
    rclpy.init()
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        folder = Path(tmp)
        params = _params(folder)
        watch = DiagnosticsWatch()
        node = subprocess.Popen(
            [str(bindir / "perception_node"), "--ros-args", "--params-file", str(params)],
            stdout=(out / "perception_node.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        sim = subprocess.Popen(
            [str(bindir / "sim_node"), "--ros-args", "--params-file", str(params)],
            stdout=(out / "sim_node.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while watch.latest is None and node.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)  # configured, active, reporting
            start = time.monotonic()
            print(f"{'t s':>6} {'RSS MiB':>8} {'trainer':>8} {'fds':>5} {'thr':>4} {'diag B':>7} "
                  f"{'keys':>5} {'windows':>8} {'outputs':>8} {'steps':>6} {'acc':>4}")  # fmt: skip
            while (elapsed := time.monotonic() - start) < args.minutes * 60 and node.poll() is None:
                size, keys, flat = watch.values()
                trainer = sum(_rss_mb(k) for k in _children(node.pid))
                s = Sample(
                    round(elapsed, 1),
                    round(_rss_mb(node.pid), 1),
                    round(trainer, 1),
                    len(os.listdir(f"/proc/{node.pid}/fd")),
                    int(_status(node.pid)["Threads"]),
                    size,
                    keys,
                    int(flat.get("windows/windows", 0)),
                    int(flat.get("windows/outputs", 0)),
                    int(flat.get("fine-tuning/steps", 0)),
                    int(flat.get("fine-tuning/accepted", 0)),
                )
                samples.append(s)
                row = (f"{s.t_s:>6.0f} {s.rss_mb:>8.1f} {s.trainer_rss_mb:>8.1f} {s.fds:>5} {s.threads:>4} "
                       f"{s.diag_bytes:>7} {s.diag_keys:>5} {s.windows:>8} {s.outputs:>8} ")  # fmt: skip
                print(row + f"{s.finetune_steps:>6} {s.accepted:>4}", flush=True)
                time.sleep(max(0.0, args.interval - (time.monotonic() - start - elapsed)))
            codes = {"sim_node": _stop(sim)}
            time.sleep(args.drain)
            _, _, final = watch.values()
        finally:
            codes_node = _stop(node)
            if sim.poll() is None:
                _stop(sim)
        codes["perception_node"] = codes_node
        watch.node.destroy_node()
    rclpy.try_shutdown()
    if not samples:
        print("the perception node never reported; see perception_node.log", file=sys.stderr)
        return 1

    run_s = samples[-1].t_s
    baseline_s = args.baseline_min * 60 if run_s >= 2 * args.baseline_min * 60 else run_s / 2
    base = next(s for s in samples if s.t_s >= baseline_s)
    end = samples[-1]
    windows, outputs = (
        int(final.get("windows/windows", end.windows)),
        int(final.get("windows/outputs", end.outputs)),
    )
    growth = 100.0 * (end.rss_mb - base.rss_mb) / base.rss_mb
    after = [s for s in samples if s.t_s >= base.t_s]
    summary = {
        "minutes": round(run_s / 60, 2),
        "load_avg_start": [round(v, 2) for v in load_start],
        "load_avg_end": [round(v, 2) for v in os.getloadavg()],
        "samples": len(samples),
        "baseline_s": base.t_s,
        "rss_mb": {"start": samples[0].rss_mb, "baseline": base.rss_mb, "end": end.rss_mb,
                   "max": max(s.rss_mb for s in samples)},
        "rss_growth_pct": round(growth, 2),
        "trainer_rss_mb": {"baseline": base.trainer_rss_mb, "end": end.trainer_rss_mb},
        "fds": {"baseline": base.fds, "end": end.fds, "max": max(s.fds for s in after)},
        "threads": {"baseline": base.threads, "end": end.threads, "max": max(s.threads for s in after)},
        "diag_bytes": {"baseline": base.diag_bytes, "end": end.diag_bytes,
                       "max": max(s.diag_bytes for s in after)},
        "diag_keys": {"baseline": base.diag_keys, "end": end.diag_keys},
        "windows": windows,
        "outputs": outputs,
        "dropped_windows": windows - outputs,
        "finetune_steps": int(final.get("fine-tuning/steps", end.finetune_steps)),
        "accepted": int(final.get("fine-tuning/accepted", end.accepted)),
        # what the counted bad inputs and node events were (a fixed vocabulary: bad.<source>.<code>)
        "counted": {k.split("/", 1)[1]: v for k, v in final.items() if "/bad." in k},
        "exit_codes": codes,
    }  # fmt: skip
    summary["targets_met"] = bool(
        growth <= 5.0
        and summary["dropped_windows"] == 0
        and end.fds <= base.fds
        and end.threads <= base.threads
        and end.diag_keys <= base.diag_keys
    )
    with (out / "soak.csv").open("w") as fh:
        fh.write(",".join(asdict(samples[0])) + "\n")
        for s in samples:
            fh.write(",".join(str(v) for v in asdict(s).values()) + "\n")
    _plot(samples, base.t_s, out / "soak.png")
    print()
    print(f"RSS {base.rss_mb:.1f} MiB at {base.t_s:.0f} s -> {end.rss_mb:.1f} MiB at {end.t_s:.0f} s "
          f"({growth:+.2f} %; target <= 5 %)")  # fmt: skip
    print(f"fds {base.fds} -> {end.fds}, threads {base.threads} -> {end.threads}, diagnostics "
          f"{base.diag_bytes} -> {end.diag_bytes} B ({base.diag_keys} -> {end.diag_keys} keys)")  # fmt: skip
    print(f"windows {windows}, outputs {outputs}, dropped {windows - outputs}; exit codes {codes}")
    print(f"counted: {summary['counted']}")
    print(f"wrote {out / 'soak.png'}, {out / 'soak.csv'}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
