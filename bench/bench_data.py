"""Data-layer benchmark: simulation speed, rosbag2 throughput, window assembly cost per message.

Run: ``MUJOCO_GL=egl .venv/bin/python bench/bench_data.py [--seconds 10]``. Prints a table, then one
JSON line with ``sim_rtf_render, sim_rtf_norender, bag_read_msgs_per_s, window_us_per_msg_p50,
window_us_per_msg_p99, high_rate_samples_used``. Targets (issue 4, 2-core CPU): rendering sim >= 1x
real time at 128x128, window p50 <= 10 us and p99 <= 50 us per message, 100 % of in-span samples used.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.data.bags import BagWriter, iter_samples
from structalign_ros.core.data.windows import WindowAssembler
from structalign_ros.core.sim.record import reading_to_msg, topics_by_kind
from structalign_ros.core.sim.robot import SimRobot

SERIES = ("wrench", "joints", "imu", "tactile")


def bench_config() -> StructAlignConfig:
    """The issue's stream mix: 1 kHz F/T, 500 Hz joints, 200 Hz IMU, 100 Hz tactile, 30 Hz camera
    (colour and aligned depth)."""
    cfg = StructAlignConfig()
    cfg.modalities["wrench"].rate_hz = 1000.0
    cfg.modalities["joints"].rate_hz = 500.0
    cfg.modalities["imu"].rate_hz = 200.0
    cfg.modalities["tactile"].rate_hz = 100.0
    return cfg


def sim_rtf(cfg: StructAlignConfig, seconds: float, render: bool) -> tuple[float, list]:
    robot = SimRobot(cfg, seed=0, render=render)
    start = time.perf_counter()
    readings = list(robot.run(seconds))
    wall = time.perf_counter() - start
    robot.close()
    return seconds / wall, readings


def bag_write(cfg: StructAlignConfig, readings: list, path: Path, storage: str) -> tuple[float, float]:
    """Messages/s and MB/s of serialising and writing pre-simulated readings."""
    topics = topics_by_kind(cfg)
    msgs = [(topics[r.kind], reading_to_msg(r, cfg), r.stamp_ns) for r in readings]
    start = time.perf_counter()
    with BagWriter(path, storage) as writer:
        for topic, msg, stamp in msgs:
            writer.write(topic, msg, stamp)
    wall = time.perf_counter() - start
    return writer.count / wall, writer.bytes / wall / 1e6


def bag_read(cfg: StructAlignConfig, path: Path) -> tuple[float, float, list]:
    """Messages/s and MB/s (of converted arrays) of reading, deserialising and converting a bag."""
    start = time.perf_counter()
    samples = list(iter_samples([path], cfg.modalities))
    wall = time.perf_counter() - start
    nbytes = sum(a.nbytes for _, _, a in samples)
    return len(samples) / wall, nbytes / wall / 1e6, samples


def window_cost(cfg: StructAlignConfig, samples: list) -> tuple[np.ndarray, float, int]:
    """Per-push latency (us) over real converted samples, and the fraction of in-span series samples
    the complete windows used (counted independently of the assembler from the raw stamps).

    One untimed pass with a throwaway assembler comes first: a node runs for hours, and first-push
    costs (buffer allocation, numpy's first calls on new shapes) are paid once, not per message.
    """
    warm = WindowAssembler(cfg.modalities, cfg.window)
    for name, stamp, value in samples:
        warm.push(name, stamp, value)
    asm = WindowAssembler(cfg.modalities, cfg.window)
    latency = np.empty(len(samples))
    windows = []
    clock = time.perf_counter_ns
    for i, (name, stamp, value) in enumerate(samples):
        t0 = clock()
        out = asm.push(name, stamp, value)
        latency[i] = clock() - t0
        windows += out
    windows += asm.flush()
    stamps = {n: np.array([t for m, t, _ in samples if m == n]) for n in SERIES}
    span = round(cfg.window.span_s * 1e9)
    in_span = used = 0
    complete = [w for w in windows if all(w.mask.values())]
    for w in complete:
        for n in SERIES:
            ts = stamps[n]
            in_span += int(((ts >= w.stamp_ns - span) & (ts <= w.stamp_ns)).sum())
            used += int(w.counts[n].sum())
    return latency / 1e3, used / max(in_span, 1), len(complete)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="simulated seconds per measurement")
    args = parser.parse_args()
    cfg = bench_config()
    rows: list[tuple[str, str, str]] = []

    rtf_norender, _ = sim_rtf(cfg, args.seconds, render=False)
    rtf_render, readings = sim_rtf(cfg, args.seconds, render=True)
    rows += [
        ("sim real-time factor, no rendering", f"{rtf_norender:.2f} x", "-"),
        (
            f"sim real-time factor, rendering {cfg.sim.width}x{cfg.sim.height}",
            f"{rtf_render:.2f} x",
            ">= 1 x",
        ),
    ]
    read = {}
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ("mcap", "sqlite3"):
            path = Path(tmp) / storage
            w_msgs, w_mb = bag_write(cfg, readings, path, storage)
            r_msgs, r_mb, samples = bag_read(cfg, path)
            read[storage] = (r_msgs, samples)
            rows += [
                (f"bag write {storage}", f"{w_msgs:,.0f} msg/s, {w_mb:.1f} MB/s", "-"),
                (f"bag read+convert {storage}", f"{r_msgs:,.0f} msg/s, {r_mb:.1f} MB/s", "-"),
            ]
    latency, used, complete = window_cost(cfg, read["mcap"][1])
    p50, p99 = np.percentile(latency, [50, 99])
    rows += [
        (f"window push p50 ({len(latency):,} msgs)", f"{p50:.2f} us", "<= 10 us"),
        ("window push p99", f"{p99:.2f} us", "<= 50 us"),
        ("window push max", f"{latency.max():.1f} us", "-"),
        (f"in-span samples used ({complete} complete windows)", f"{100 * used:.2f} %", "100 %"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'value':<28} target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<28} {target}")
    print(
        json.dumps(
            {
                "sim_rtf_render": round(rtf_render, 3),
                "sim_rtf_norender": round(rtf_norender, 3),
                "bag_read_msgs_per_s": round(read["mcap"][0], 1),
                "window_us_per_msg_p50": round(float(p50), 3),
                "window_us_per_msg_p99": round(float(p99), 3),
                "high_rate_samples_used": round(used, 6),
            }
        )
    )


if __name__ == "__main__":
    main()
