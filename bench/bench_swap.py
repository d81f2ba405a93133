"""What installing fine-tuned weights costs the live node: an ONNX Runtime predictor's weight swap
(each one builds a whole new session; see ``runtime.Predictor.swap_weights``), as the node does for
every update the guard accepts.

Per swap: its duration, and the longest gap another Python thread (a 1 ms ticker, standing in for
the node's sensor reader and inference worker) sees meanwhile: a gap longer than a window may wait
for inference (``node.max_queue_s``, 0.5 s; before that a queue of 4 windows, 133 ms) drops windows.
Then resident memory across the swaps, with and without glibc's ``malloc_trim(0)`` after each, in
two fresh processes: growth that ``malloc_trim`` gives back is memory the allocator kept after
freeing, not a leak.

    .venv/bin/python bench/bench_swap.py [--swaps 30]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

MODEL = Path(__file__).resolve().parents[1] / "models" / "sim_default.pt"


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def _child(swaps: int, trim: bool) -> None:
    import torch

    from structalign_ros.core.config import RuntimeConfig
    from structalign_ros.core.learn.train import load_checkpoint
    from structalign_ros.core.serve.export import example_batch, onnx_bytes
    from structalign_ros.core.serve.runtime import Predictor

    torch.set_num_threads(1)
    sys.setswitchinterval(0.001)  # as the node does (perception_node.responsive_threads)
    model = load_checkpoint(MODEL).build_model().eval()
    predictor = Predictor.from_config(RuntimeConfig(backend="onnx"), model)
    batch = example_batch(model, 1)
    for _ in range(50):
        predictor(batch)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    onnx = onnx_bytes(model)  # exported once, as the trainer child sends it
    libc = ctypes.CDLL("libc.so.6") if trim else None
    ticks: list[float] = []
    done = threading.Event()

    def ticker() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    thread = threading.Thread(target=ticker, daemon=True)
    thread.start()
    rss, swap_ms, gap_ms = [_rss_mb()], [], []
    for _ in range(swaps):
        ticks.clear()
        t0 = time.perf_counter()
        predictor.swap_weights(state, onnx)
        t1 = time.perf_counter()
        time.sleep(0.01)  # the ticker's first tick after the swap
        seen = [t for t in ticks if t <= t1 + 0.01]
        swap_ms.append(1e3 * (t1 - t0))
        gap_ms.append(1e3 * max(b - a for a, b in zip([t0, *seen], [*seen, t1 + 0.01], strict=True)))
        for _ in range(30):
            predictor(batch)
        if libc is not None:
            libc.malloc_trim(0)
        rss.append(_rss_mb())
    done.set()
    print(json.dumps({"rss": rss, "swap_ms": swap_ms, "gap_ms": gap_ms}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--swaps", type=int, default=30)
    parser.add_argument("--child", choices=("plain", "trim"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.swaps, args.child == "trim")
        return 0
    runs = {}
    for mode in ("plain", "trim"):
        out = subprocess.run(
            [sys.executable, __file__, "--swaps", str(args.swaps), "--child", mode],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    plain = runs["plain"]
    swap, gap = plain["swap_ms"], plain["gap_ms"]
    print(f"swap: median {statistics.median(swap):.0f} ms, max {max(swap):.0f} ms; longest pause of another "
          f"thread: median {statistics.median(gap):.0f} ms, max {max(gap):.0f} ms")  # fmt: skip
    marks = sorted({0, 1, 5, 10, 20, args.swaps} & set(range(args.swaps + 1)))
    print(f"{'RSS MiB after swaps':>20} " + " ".join(f"{m:>7}" for m in marks))
    for mode, run in runs.items():
        print(f"{mode:>20} " + " ".join(f"{run['rss'][m]:>7.1f}" for m in marks))
    summary = {
        "swaps": args.swaps,
        "swap_ms": {"median": round(statistics.median(swap), 1), "max": round(max(swap), 1)},
        "pause_ms": {"median": round(statistics.median(gap), 1), "max": round(max(gap), 1)},
        **{f"rss_{mode}": {"start_mb": round(run["rss"][0], 1), "end_mb": round(run["rss"][-1], 1),
                           "last_half_growth_mb": round(run["rss"][-1] - run["rss"][len(run["rss"]) // 2], 1)}
           for mode, run in runs.items()},
    }  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
