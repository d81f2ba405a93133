"""Perception quality: the default recipe's end-effector output beside simple baselines, two robots.

Per simulated robot (``arm4``: the default config; ``arm6``: ``config/sim_arm6.yaml``):

1. record episodes with ``structalign sim`` (training seeds ``--train-seeds`` and one validation
   seed, 40 s each; test seeds ``--test-seeds``, 30 s each), or reuse them from ``--data``;
2. train with the default recipe exactly as a user would: ``structalign train --bags TRAIN... VAL
   --config ROBOT.yaml --out RUN``, no other flag (wall time and CPU time measured);
3. on the test episodes, under every condition of :mod:`core.eval.quality` (all sensors; each modality
   masked; each modality noised at its own std), the model's ``RUN/model.pt`` and every baseline of
   :mod:`core.learn.baselines`, fitted on the training and validation episodes the model saw.

Prints a table per robot, the targets of issue 14 with pass/fail, then one JSON line
``{"robots": {NAME: {"train_s", "train_cpu_s", "conditions": {COND: {"model_mm", "model_deg",
"best_baseline_mm", "baselines": {...}}}, "targets": {...}}}}``.

    .venv/bin/python bench/bench_quality.py                      # both robots, ~40 min on 2 cores
    .venv/bin/python bench/bench_quality.py --robots arm6 --data /tmp/q   # reuse recorded bags
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.config_io import load_yaml
from structalign_ros.core.data.batch import concat
from structalign_ros.core.data.dataset import labelled_episode
from structalign_ros.core.eval.quality import format_quality, model_pose, quality_report
from structalign_ros.core.learn.baselines import fit_baselines
from structalign_ros.core.learn.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ROBOTS = {"arm4": None, "arm6": ROOT / "config" / "sim_arm6.yaml"}
CLI = [str(Path(sys.executable).parent / "structalign")]


def record(robot: str, data: Path, seeds: list[int], seconds: int) -> list[Path]:
    """``structalign sim`` episodes (kept when already there)."""
    out = []
    for seed in seeds:
        path = data / robot / f"ep{seed}"
        if not (path / "metadata.yaml").exists():
            cmd = [*CLI, "sim", "--seconds", str(seconds), "--seed", str(seed), "--out", str(path)]
            if ROBOTS[robot] is not None:
                cmd += ["--config", str(ROBOTS[robot])]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append(path)
    return out


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train(robot: str, bags: list[Path], run: Path) -> tuple[float, float]:
    """The default recipe through the CLI; returns (wall s, CPU s)."""
    cmd = [*CLI, "train", "--bags", *map(str, bags), "--out", str(run), "--quiet"]
    if ROBOTS[robot] is not None:
        cmd += ["--config", str(ROBOTS[robot])]
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, children_cpu_s() - cpu0


def targets(
    conds: dict[str, Any], kinds: dict[str, str], default_robot: bool, cpu_s: float
) -> dict[str, Any]:
    """Issue 14's targets for one robot, each with its value and whether it holds."""
    allc = conds["all"]
    out: dict[str, Any] = {
        "all_vs_best_baseline": (allc["ratio"], allc["ratio"] <= 1.2),
        "all_deg": (allc["model_deg"], allc["model_deg"] <= 0.3),
        "train_cpu_min": (cpu_s / 60, cpu_s / 60 <= 15),
    }
    if default_robot:
        out["all_mm"] = (allc["model_mm"], allc["model_mm"] <= 1.0)
    joints = next((n for n, k in kinds.items() if k == "joints"), None)
    if joints is not None:
        c = conds[f"-{joints}"]
        out["joints_missing_vs_best_nojoint_baseline"] = (c["ratio"], c["ratio"] <= 0.8)
    worst = max(
        (c["model_mm"] / allc["model_mm"], cond)
        for cond, c in conds.items()
        if cond != "all" and cond[1:] != joints
    )
    out[f"worst_other_condition ({worst[1]}) / all"] = (worst[0], worst[0] <= 1.5)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robots", nargs="+", default=list(ROBOTS), choices=list(ROBOTS))
    parser.add_argument("--data", default="build/bench_quality", help="where episodes and runs go")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105])
    parser.add_argument("--val-seed", type=int, default=106)
    parser.add_argument("--test-seeds", type=int, nargs="+", default=[107, 108])
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the evaluation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    result: dict[str, Any] = {"robots": {}}
    for robot in args.robots:
        config = StructAlignConfig() if ROBOTS[robot] is None else load_yaml(ROBOTS[robot])
        kinds = {n: m.kind for n, m in config.modalities.items() if m.enabled}
        seen = record(robot, data, [*args.train_seeds, args.val_seed], 40)
        tests = record(robot, data, args.test_seeds, 30)
        run = data / robot / "run"
        wall_s, cpu_s = train(robot, seen, run)
        model = load_checkpoint(run / "model.pt").build_model().eval()
        t0 = time.perf_counter()
        baselines = fit_baselines(concat([labelled_episode(p, config, model.specs) for p in seen]), kinds)
        fit_s = time.perf_counter() - t0
        test = concat([labelled_episode(p, config, model.specs) for p in tests])
        conds = quality_report(model_pose(model), test, baselines, kinds)
        checks = targets(conds, kinds, robot == "arm4", cpu_s)
        print(
            f"\n== {robot}: trained in {wall_s / 60:.1f} min wall, {cpu_s / 60:.1f} CPU-min; "
            f"baselines fitted in {fit_s:.0f} s; {len(test)} test windows"
        )
        print(format_quality(conds))
        for name, (value, ok) in checks.items():
            print(f"  target {name}: {value:.3f} {'PASS' if ok else 'FAIL'}")
        result["robots"][robot] = {
            "train_s": round(wall_s, 1),
            "train_cpu_s": round(cpu_s, 1),
            "test_windows": len(test),
            "conditions": {
                c: {
                    "model_mm": round(r["model_mm"], 3),
                    "model_deg": round(r["model_deg"], 3),
                    "best_baseline_mm": round(r["best_baseline_mm"], 3),
                    "baselines": {n: round(b["mm"], 3) for n, b in r["baselines"].items()},
                }
                for c, r in conds.items()
            },
            "targets": {n: {"value": round(v, 3), "pass": ok} for n, (v, ok) in checks.items()},
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
