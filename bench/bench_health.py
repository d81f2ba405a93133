"""Sensor health (issue 15, part a, offline): every fault kind on every modality, the live pipeline with
its health signals on and off, side by side on the same recorded episode.

One episode of the default simulated robot is recorded (``--seconds``, default 40; or ``--bag``) and
replayed message by message through :class:`~structalign_ros.core.serve.perception.PerceptionPipeline` (the
node's own path, without DDS) with the shipped model, fine-tuning off. For each modality and fault kind
of :class:`~structalign_ros.core.sim.faults.FaultInjector` (noise and bias at 1x the signal's std,
stuck, zero, a 100 ms delay, and for the cameras blackout and occlusion), the fault runs from
``--start`` to ``--stop`` seconds (stamp time). Reported per fault:

- ``fall_s``: seconds from the fault's start until the faulted modality's published weight is first at
  or below 50 % of its clean value (the mean over the clean part before the fault); null: never;
- ``recover_s``: seconds from the fault's end until its weight is above 50 % for good; null when it
  never fell;
- ``ee_ratio``: mean EE position error during the fault over the clean error (the same pipeline, the
  seconds before the fault), health on; ``ee_ratio_off`` the same with ``node.sensor_health`` off.

Also the clean run's weight steadiness (std over mean per modality, after the warm-up). Prints a table,
then one JSON line ``{"clean": {...}, "faults": {MODALITY: {FAULT: {...}}}}``.

What this does not measure: the same over DDS with the simulator node (bench/bench_live.py does), and
a second robot (no trained model of ``arm6`` is shipped).

    .venv/bin/python bench/bench_health.py            # ~20 min on 2 cores (70 replays)
    .venv/bin/python bench/bench_health.py --kinds noise delay   # those faults only
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from structalign_ros.core.config import FRAME_KINDS, FaultConfig, StructAlignConfig
from structalign_ros.core.config_io import from_dict, to_dict
from structalign_ros.core.learn.train import load_checkpoint
from structalign_ros.core.serve.perception import PerceptionPipeline, replay
from structalign_ros.core.sim.faults import FaultInjector, fault_message
from structalign_ros.core.sim.record import record_episode

MODEL = Path(__file__).resolve().parents[1] / "models" / "sim_default.pt"
SERIES_FAULTS = ("noise", "stuck", "bias", "zero", "delay")
FRAME_FAULTS = ("blackout", "occlude")


def run(bag: Path, fault: FaultConfig | None, health: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seconds from the first window, weights (T, M), position error mm (T,)) of labelled windows."""
    data = to_dict(StructAlignConfig())
    data["node"].update(sensor_health=health, finetune=False)
    config = from_dict(data)
    pipeline = PerceptionPipeline(config, load_checkpoint(MODEL), warn=lambda m: None)
    alter = None
    if fault is not None:
        injector = FaultInjector(fault)
        alter = lambda kind, msg: fault_message(kind, msg, injector) if kind == fault.modality else msg  # noqa: E731
    outputs = [o for o in replay(pipeline, [bag], config.ground_truth_topic, alter) if o.pose_error]
    stamps = np.array([o.stamp_ns for o in outputs])
    return (
        (stamps - stamps[0]) * 1e-9,
        np.stack([o.weights for o in outputs]),
        np.array([o.pose_error[0] for o in outputs]),
    )


def score(
    t: np.ndarray,
    weights: np.ndarray,
    error: np.ndarray,
    error_off: np.ndarray,
    m: int,
    start: float,
    stop: float,
) -> dict[str, Any]:
    clean = (t > start - 6) & (t < start)
    during = (t >= start) & (t < stop)
    ratio = weights[:, m] / weights[clean, m].mean()
    fell = t[during & (ratio <= 0.5)]
    low_after = t[(t >= stop) & (ratio <= 0.5)]
    fall_s = float(fell[0] - start) if len(fell) else None
    recover_s = None if fall_s is None else float(low_after[-1] - stop) if len(low_after) else 0.0
    base = error[clean].mean()
    return {
        "fall_s": fall_s,
        "recover_s": recover_s,
        "weight_ratio_median": float(np.median(ratio[during])),
        "ee_ratio": float(error[during].mean() / base),
        "ee_ratio_off": float(error_off[during].mean() / error_off[clean].mean()),
        "ee_mm": float(error[during].mean()),
        "ee_mm_off": float(error_off[during].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--bag", type=Path, help="a recorded episode of the default robot (default: record one)"
    )
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=107)
    parser.add_argument(
        "--start", type=float, default=15.0, help="fault start, s (after the 256-window warm-up)"
    )
    parser.add_argument("--stop", type=float, default=25.0)
    parser.add_argument("--modalities", nargs="*", help="modality names (default: all)")
    parser.add_argument(
        "--kinds", nargs="*", choices=SERIES_FAULTS + FRAME_FAULTS, help="fault kinds (default: all)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = StructAlignConfig()
    with tempfile.TemporaryDirectory() as tmp:
        bag = args.bag
        if bag is None:
            bag = Path(tmp) / "episode"
            record_episode(bag, config, seed=args.seed, seconds=args.seconds)
        t, weights, error = run(bag, None, True)
        _, weights_off, _ = run(bag, None, False)
        steady = weights[(t > 10) & (t < args.start)]
        clean = {
            "weight_cv": {
                n: float(v) for n, v in zip(config.modalities, steady.std(0) / steady.mean(0), strict=True)
            },
            "max_abs_change_vs_off": float(np.abs(weights - weights_off)[(t > 10) & (t < args.start)].max()),
            "ee_mm": float(error.mean()),
        }
        faults: dict[str, dict[str, Any]] = {}
        names = args.modalities or list(config.modalities)
        print(
            f"{'modality':8s} {'fault':9s} {'fall s':>7s} {'recover s':>9s} {'w ratio':>7s} "
            f"{'EE x on':>8s} {'EE x off':>8s} {'mm on':>8s} {'mm off':>8s}"
        )
        for name in names:
            kind = config.modalities[name].kind
            m = list(config.modalities).index(name)
            kinds = SERIES_FAULTS + (FRAME_FAULTS if kind in FRAME_KINDS else ())
            for fault_kind in (k for k in kinds if not args.kinds or k in args.kinds):
                fault = FaultConfig(modality=kind, kind=fault_kind, start_s=args.start, stop_s=args.stop)
                t, weights, error = run(bag, fault, True)
                _, _, error_off = run(bag, fault, False)
                row = score(t, weights, error, error_off, m, args.start, args.stop)
                faults.setdefault(name, {})[fault_kind] = row
                fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
                print(
                    f"{name:8s} {fault_kind:9s} {fmt(row['fall_s']):>7s} {fmt(row['recover_s']):>9s} "
                    f"{row['weight_ratio_median']:7.2f} {row['ee_ratio']:8.1f} {row['ee_ratio_off']:8.1f} "
                    f"{row['ee_mm']:8.2f} {row['ee_mm_off']:8.2f}",
                    flush=True,
                )
    rows = [r for by in faults.values() for r in by.values()]
    fell = [r for r in rows if r["fall_s"] is not None and r["fall_s"] <= 5 and (r["recover_s"] or 0) <= 10]
    print(
        f"clean: weight std/mean max {max(clean['weight_cv'].values()):.3f}; weight <= 50 % "
        f"within 5 s and back within 10 s: {len(fell)} of {len(rows)} faults; EE <= 1.5x clean: "
        f"{sum(r['ee_ratio'] <= 1.5 for r in rows)} of {len(rows)} (health off: "
        f"{sum(r['ee_ratio_off'] <= 1.5 for r in rows)})"
    )
    print(json.dumps({"clean": clean, "faults": faults}))


if __name__ == "__main__":
    main()
