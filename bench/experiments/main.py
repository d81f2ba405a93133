"""The command: the budgets (quick, full, smoke), the data, each experiment in turn, results.json,
plots and the final JSON line."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

import experiments

from . import e1, e2, e3, e4, e5
from .arms import Budget
from .data import Setup, concat, load_episodes

ROOT = Path(__file__).resolve().parents[2]  # the repository


def plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(str(out / name))

    if "E1" in results:
        e1.plot(results["E1"], plt, save)
    if "E2" in results:
        e2.plot(results["E2"], plt, save)
    if "E3" in results:
        e3.plot(results["E3"], plt, save)
    if "E4" in results:
        e4.plot(results["E4"]["ee_mm"], plt, save)
    if "E5" in results:
        e5.plot(results["E5"], plt, save)
    return written


QUICK = {
    "episodes": 4, "seconds": 12.0, "test_episodes": 1, "seeds": 5, "batch": 48,
    "e1_steps": 30, "e2_steps": 15, "e2_batch": 32, "severities": [1.0], "e3_n": 64, "e3_repeats": 2,
    "e4_steps": 30, "e4_modalities": ["joints"], "e4_frac": 0.5, "e5_steps": 30, "e5_fracs": [0.0, 0.5],
}  # fmt: skip
FULL = {
    "episodes": 6, "seconds": 15.0, "test_episodes": 2, "seeds": 5, "batch": 64,
    "e1_steps": 80, "e2_steps": 30, "e2_batch": 48, "severities": [1.0], "e3_n": 128,
    "e3_repeats": 3, "e4_steps": 80, "e4_modalities": ["rgb", "depth", "wrench", "imu", "tactile", "joints"],
    "e4_frac": 0.5, "e5_steps": 150, "e5_fracs": [0.0, 0.25, 0.5],
}  # fmt: skip


def compact(results: dict) -> dict:
    """The headline numbers for the final JSON line (everything else is in results.json)."""
    e1 = {}
    for base, r in results["E1"].items():
        if base == "untrained":
            e1[base] = {k: round(v["mean"], 4) for k, v in r.items()}
            continue
        e1[base] = {
            "ee_mm": {a: round(r[a]["ee_mm"]["mean"], 2) for a in ("base", "gw", "gw_shuffled")},
            "contact_acc": {a: round(r[a]["contact_acc"]["mean"], 4) for a in ("base", "gw", "gw_shuffled")},
            "ee_base_minus_gw": round(r["ee_base_minus_gw"]["mean"], 2),
            "ee_base_minus_gw_std": round(r["ee_base_minus_gw"]["std"], 2),
            "contact_gw_minus_base": round(r["contact_gw_minus_base"]["mean"], 4),
        }
    e3 = results["E3"]
    e4 = {k: round(v["mean"], 2) for k, v in results["E4"]["ee_mm"].items()}
    e4 |= {f"paired {k}": round(v["mean"], 2) for k, v in results["E4"]["paired_mm"].items()}
    e5 = {}
    for f in results["E5"]["fractions"]:
        r = results["E5"][str(f)]
        e5[str(f)] = {
            "map_gram": round(r["gram"]["map"]["mean"], 4),
            "map_mover": round(r["mover"]["map"]["mean"], 4),
            "r1_gram": round(r["gram"]["r1"]["mean"], 4),
            "r1_mover": round(r["mover"]["r1"]["mean"], 4),
            "map_mover_minus_gram": round(r["map_mover_minus_gram"]["mean"], 4),
        }
    return {
        "E1": e1,
        "E2": {"spearman": {k: round(v, 3) for k, v in results["E2"]["spearman"].items()}},
        "E3": {
            "slope_barycenter": round(e3["slope_barycenter"], 3),
            "slope_pairwise": round(e3["slope_pairwise"], 3),
        },
        "E4": e4,
        "E5": e5,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=experiments.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="the reduced run (under 15 min on 2 cores)")
    ap.add_argument("--smoke", action="store_true", help="quick, but 3 steps and 2 seeds: checks the script")
    ap.add_argument("--seeds", type=int, help="number of seeds (default 5)")
    ap.add_argument("--only", default="E1,E2,E3,E4,E5", help="comma list of experiments to run")
    ap.add_argument(
        "--cache", default=os.environ.get("STRUCTALIGN_EXPERIMENT_CACHE", "/tmp/structalign_experiments")
    )
    ap.add_argument("--out", help="results folder (default docs/results/quick or docs/results/full)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 on a shared CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = dict(QUICK if args.quick else FULL)
    if args.smoke:
        cfg.update(QUICK, seeds=2, e3_repeats=1, e1_steps=3, e2_steps=3, e4_steps=3, e5_steps=3)
    if args.seeds:
        cfg["seeds"] = args.seeds
    out = Path(args.out or ROOT / "docs" / "results" / ("quick" if args.quick else "full"))
    if args.smoke and not args.out:
        out = Path("/tmp/structalign_experiments_smoke")
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    episodes, kinds, data_s = load_episodes(cache, cfg["episodes"], cfg["seconds"], log)
    k = cfg["test_episodes"]
    su = Setup(concat(episodes[:-k]), concat(episodes[-k:]), kinds, list(range(cfg["seeds"])), log)
    log(f"data: {len(su.train)} training windows, {len(su.test)} held-out windows ({data_s:.1f} s)")
    budget = Budget(cfg["e1_steps"], cfg["batch"])
    only = set(args.only.split(","))
    results: dict = {}
    timings = {}
    for name, run in (
        ("E1", lambda: e1.run(su, budget)),
        ("E2", lambda: e2.run(su, Budget(cfg["e2_steps"], cfg["e2_batch"]), cfg["severities"])),
        ("E3", lambda: e3.run(su, cfg["e3_n"], cfg["e3_repeats"])),
        (
            "E4",
            lambda: e4.run(su, Budget(cfg["e4_steps"], cfg["batch"]), cfg["e4_modalities"], cfg["e4_frac"]),
        ),
        ("E5", lambda: e5.run(su, Budget(cfg["e5_steps"], cfg["batch"]), cfg["e5_fracs"])),
    ):
        if name in only:
            start = time.perf_counter()
            results[name] = run()
            timings[name] = round(time.perf_counter() - start, 1)
            log(f"{name} took {timings[name]} s")
            partial = {"meta": {"config": cfg, "experiment_s": timings, "partial": True}, **results}
            (out / "results.json").write_text(json.dumps(partial, indent=1))  # survives an interrupted run
    wall = time.perf_counter() - t0
    meta = {
        "config": cfg,
        "wall_s": round(wall, 1),
        "data_s": round(data_s, 1),
        "experiment_s": timings,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "load_at_end": os.getloadavg(),
        "torch": torch.__version__,
        "threads": args.threads,
    }
    (out / "results.json").write_text(json.dumps({"meta": meta, **results}, indent=1))
    for path in plots(results, out):
        log(f"wrote {path}")
    if len(results) == 5:
        print(f"\nwall time {wall:.0f} s (data {data_s:.0f} s), load {os.getloadavg()}")
        print(json.dumps(compact(results)))
    else:
        print(json.dumps({k: v for k, v in results.items() if k in ("E3",)} or {"ran": sorted(results)}))


if __name__ == "__main__":
    main()
