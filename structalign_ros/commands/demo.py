"""``structalign demo``: the simulated robot, end to end through what the suite has today.

MuJoCo episode -> rosbag2 (mcap) -> the same convert -> WindowAssembler path the node uses -> per-batch
input kernels K_x^m of every modality -> their GW barycenter (UniOMA's structural consensus C*) ->
each modality's GW distance to the consensus. Until the node suite lands (issue 5) this is the main
job: it shows, on simulated sensor data, how much each modality's geometry agrees with the others.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from structalign_ros.core.batch import collate
from structalign_ros.core.config import StructAlignConfig, load_yaml
from structalign_ros.core.dataset import ReplayReport, iter_windows
from structalign_ros.core.kernels import InputKernels
from structalign_ros.core.ot import gw_barycenter, gw_value
from structalign_ros.core.sim.record import record_episode


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=20.0, help="simulated seconds (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64, help="windows per consensus (default 64)")
    parser.add_argument("--config", default=None, help="parameter file (default: built-in config)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the kernels here are small, and extra OpenMP threads "
        "spin-wait when other processes share the cores: 8.8 s instead of 0.18 s per consensus once)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    config = load_yaml(args.config) if args.config else StructAlignConfig()
    say = (lambda *a: None) if args.json else print
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "episode"
        t0 = time.perf_counter()
        stats = record_episode(bag, config, seed=args.seed, seconds=args.seconds)
        wall = time.perf_counter() - t0
        say(f"simulated {stats.sim_seconds:.1f} s in {wall:.1f} s: {stats.messages} messages")
        report = ReplayReport()
        windows = [w for w, _ in iter_windows([bag], config, report) if all(w.mask.values())]
    starts = range(0, len(windows) - args.batch + 1, args.batch)
    batches = [collate(windows[i : i + args.batch]) for i in starts]
    if not batches:
        say(f"only {len(windows)} complete windows: run longer than {args.seconds} s or lower --batch")
        return 1
    modalities = batches[0].modalities
    kernels = InputKernels({m: config.modalities[m].kind for m in modalities})
    kernels.fit(batches[0])
    M = len(modalities)
    lam = torch.full((M,), 1.0 / M)
    distances, times = [], []
    for batch in batches:
        K = kernels(batch, torch.arange(len(batch)))
        t0 = time.perf_counter()
        bary = gw_barycenter(K, lam)
        times.append(1e3 * (time.perf_counter() - t0))
        distances.append(gw_value(bary.C.expand(M, -1, -1), K, bary.plans))
    mean = torch.stack(distances).mean(0)
    summary = {
        "windows": len(windows),
        "batches": len(batches),
        "gw_to_consensus": {m: round(float(d), 6) for m, d in zip(modalities, mean, strict=True)},
        "consensus_ms_p50": round(statistics.median(times), 2),
    }
    say(f"\n{len(windows)} complete windows, {len(batches)} batches of {args.batch}")
    say(f"{'modality':<10} {'GW to consensus':>16}")
    for m, d in summary["gw_to_consensus"].items():
        say(f"{m:<10} {d:>16.6f}")
    say(f"consensus (GW barycenter of {M} kernels, n={args.batch}): p50 {summary['consensus_ms_p50']} ms")
    print(json.dumps(summary))
    return 0
