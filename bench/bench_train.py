"""Learning engine: train-step time per objective, the GW regulariser's overhead, and its scaling in M.

1. One full ``train_step`` (forward, objective, backward, AdamW) per objective at ``--batch`` windows
   of the six synthetic modalities (64x64 RGB and depth, 8x8x4 tactile, 16-step wrench/IMU/joints),
   default model config. UniOMA uses ``--base`` as its contrastive part; its overhead is its step
   time over that base's.
2. Inference latency of one window (batch 1, six modalities, default model) through the
   :class:`runtime.Predictor`, torch and ONNX Runtime (CPU provider), against the node's 33 ms budget.
3. The structural term alone against the number of modalities M = 2..7 at n = ``--batch``: UniOMA's
   barycenter route (one GW barycenter of the M input kernels + M distances to the embedding
   kernels, backward included) next to the pairwise alternative (GW between all M(M-1)/2 pairs of
   embedding kernels, backward included), both with the objective config's iteration budget.

Prints a table, then one JSON line.

    .venv/bin/python bench/bench_train.py            # batch 128, 5 timed steps each
    .venv/bin/python bench/bench_train.py --quick    # batch 32, 2 timed steps: a smoke run
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from structalign_ros.core.config import OBJECTIVES, ModelConfig, ObjectiveConfig, TrainConfig
from structalign_ros.core.data.batch import ModalitySpec
from structalign_ros.core.eval.synthetic import SyntheticWorld
from structalign_ros.core.learn.kernels import rbf_kernel
from structalign_ros.core.learn.models import MultimodalModel
from structalign_ros.core.learn.objectives import build_objective
from structalign_ros.core.learn.train import make_optimizer, seed_everything, train_step
from structalign_ros.core.ot import OTConvergenceWarning, gromov_wasserstein2, gw_barycenter
from structalign_ros.core.serve.export import export_onnx
from structalign_ros.core.serve.runtime import Predictor


def timed_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in ms after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def step_ms(name: str, batch_size: int, repeats: int, base: str) -> float:
    world = SyntheticWorld(image=64, steps=16)
    seed_everything(0)
    batches = [world.batch(batch_size, seed=s)[0] for s in range(repeats + 1)]
    model = MultimodalModel(ModalitySpec.from_batch(batches[0], world.kinds), ModelConfig())
    model.fit_input_stats(batches[0])
    try:
        objective = build_objective(
            ObjectiveConfig(name=name, base=base), world.kinds, ModelConfig().embed_dim
        )
    except NotImplementedError:
        return None
    opt = make_optimizer(model, objective, TrainConfig())
    it = iter(batches * 2)
    return timed_ms(lambda: train_step(model, next(it), opt, objective), repeats)


def inference_ms(repeats: int, threads: int) -> dict[str, float]:
    """Median latency of one window through the torch and the ONNX Runtime predictor, in ms."""
    world = SyntheticWorld(image=64, steps=16)
    batch = world.batch(32, seed=0)[0]
    model = MultimodalModel(ModalitySpec.from_batch(batch, world.kinds), ModelConfig())
    model.fit_input_stats(batch)
    one = batch.select(torch.arange(1))
    buf = io.BytesIO()
    export_onnx(model, one, buf)
    torch_pred = Predictor.from_model(model)
    onnx_pred = Predictor.from_onnx(buf.getvalue(), providers="CPUExecutionProvider", threads=threads)
    return {
        "torch_ms": round(timed_ms(lambda: torch_pred(one), repeats), 2),
        "onnx_ms": round(timed_ms(lambda: onnx_pred(one), repeats), 2),
    }


def structure_ms(m: int, n: int, repeats: int, cfg: ObjectiveConfig) -> tuple[float, float]:
    """(barycenter route, pairwise route) time of the structural term with backward, in ms."""
    g = torch.Generator().manual_seed(m)
    latent = torch.randn(n, 4, generator=g)
    Kx = torch.stack([rbf_kernel(torch.tanh(latent @ torch.randn(4, 12, generator=g))) for _ in range(m)])
    z = torch.randn(m, n, 16, generator=g, requires_grad=True)
    logits = torch.zeros(m, requires_grad=True)
    budget = {"max_iter": cfg.gw_iterations, "inner_max_iter": cfg.sinkhorn_iterations}
    first, second = torch.triu_indices(m, m, offset=1)

    def barycenter_route() -> None:
        lam = torch.softmax(logits, 0)
        Kz = rbf_kernel(z)
        C = gw_barycenter(Kx, lam, T0="identity", epsilon=cfg.epsilon, gw_steps=2, **budget).C
        d = gromov_wasserstein2(C.expand(m, -1, -1), Kz, T0="identity", epsilon=cfg.epsilon, **budget)
        (lam * d).sum().backward()

    def pairwise_route() -> None:
        Kz = rbf_kernel(z)
        d = gromov_wasserstein2(Kz[first], Kz[second], T0="identity", epsilon=cfg.epsilon, **budget)
        d.sum().backward()

    return timed_ms(barycenter_route, repeats), timed_ms(pairwise_route, repeats)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base", default="pairwise", help="UniOMA's contrastive base objective")
    parser.add_argument("--quick", action="store_true", help="batch 32, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.repeats = 32, 2
    warnings.simplefilter("ignore", OTConvergenceWarning)  # fixed iteration budgets by design

    print(f"# train_step at batch {args.batch}, 6 modalities, {torch.get_num_threads()} threads, CPU")
    print(f"{'objective':<10} {'step ms':>10}")
    objectives: dict[str, dict[str, float]] = {}
    for name in OBJECTIVES:
        ms = step_ms(name, args.batch, args.repeats, args.base)
        objectives[name] = {"step_ms": round(ms, 1)}
        print(f"{name:<10} {ms:10.1f}")
    overhead = objectives["unioma"]["step_ms"] / objectives[args.base]["step_ms"]
    print(f"# UniOMA / {args.base} step time: {overhead:.2f}x (target <= 2x, issue 15)")

    inference = inference_ms(max(20, 4 * args.repeats), torch.get_num_threads())
    t_ms, o_ms = inference["torch_ms"], inference["onnx_ms"]
    print(f"\n# one window, batch 1: torch {t_ms:.1f} ms, onnxruntime {o_ms:.1f} ms (30 Hz budget: 33 ms)")

    cfg = ObjectiveConfig()
    ms_, bary, pair = [], [], []
    print(f"\n# structural term with backward, n = {args.batch}")
    print(f"{'M':>3} {'barycenter ms':>14} {'pairwise GW ms':>15} {'pairs':>6}")
    for m in range(2, 8):
        b, p = structure_ms(m, args.batch, args.repeats, cfg)
        ms_.append(m)
        bary.append(round(b, 1))
        pair.append(round(p, 1))
        print(f"{m:>3} {b:14.1f} {p:15.1f} {m * (m - 1) // 2:>6}")
    b_slope, p_slope = slope(ms_, bary), slope(ms_, pair)
    print(f"# log-log slope in M: barycenter {b_slope:.2f} (target <= 1.2), pairwise {p_slope:.2f}")

    result = {
        "objectives": objectives,
        "unioma_over_base": round(overhead, 2),
        "inference": inference,
        "scaling": {"m": ms_, "barycenter_ms": bary, "pairwise_gw_ms": pair},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
