"""``structalign eval``: a trained model on rosbags -> a table, a JSON file and plots.

Each bag is one episode (the contact probe is tested on episodes it was not fitted on); windows come
from the same replay path as training (:func:`core.data.dataset.iter_windows`), and every number from
:func:`core.eval.evaluation.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from structalign_ros.commands.options import add_set_argument


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bags", nargs="+", required=True, metavar="BAG", help="rosbag2 directories (episodes)"
    )
    parser.add_argument("--model", required=True, metavar="PATH", help="checkpoint (.pt) written by training")
    parser.add_argument(
        "--config", metavar="FILE", help="topics/windows to read the bags with (default: the model's)"
    )
    add_set_argument(parser)  # over the model's config or --config; train.threads: torch's threads
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="inference backend")
    parser.add_argument(
        "--out", metavar="DIR", help="where eval.json and the plots go (default: PATH stem + _eval)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    parser.add_argument("--max-windows", type=int, default=512, help="windows per retrieval pair")
    parser.add_argument("--geometry-windows", type=int, default=64, help="windows for the geometry metrics")
    parser.add_argument("--no-plots", action="store_true", help="skip the plots")
    parser.add_argument(
        "--train-bags",
        nargs="+",
        metavar="BAG",
        help="bags to fit the baselines on (default: leave one of --bags out in turn)",
    )
    parser.add_argument(
        "--no-baselines", action="store_true", help="skip the baselines and the sensor conditions"
    )


def labelled_batches(
    paths: Sequence[str | Path], config: Any, batch_size: int, layout: Any
) -> Iterator[tuple[Any, Any, int]]:
    """``(batch, object speed, episode)`` over every bag, in time order (see :func:`evaluation.collect`),
    in the model's input ``layout`` (its specs)."""
    import numpy as np

    from structalign_ros.core.data.dataset import iter_windows, labelled_batch, object_track
    from structalign_ros.core.eval.evaluation import object_speed

    for episode, path in enumerate(paths):
        track_ns, track_xyz = object_track(path, config)
        chunk: list[Any] = []
        windows = iter_windows([path], config)
        while True:
            chunk = [item for _, item in zip(range(batch_size), windows, strict=False)]
            if not chunk:
                break
            batch = labelled_batch(chunk, layout)
            if batch.pose is None:  # some windows lack ground truth: keep the ones that have it
                poses = [p if p is not None else np.full(7, np.nan, np.float32) for _, p in chunk]
                batch = labelled_batch([(w, p) for (w, _), p in zip(chunk, poses, strict=True)], layout)
            speed = object_speed(track_ns, track_xyz, batch.stamps_ns.numpy()) if len(track_ns) else None
            yield batch, speed, episode


def _labelled_episodes(batches: Sequence[tuple[Any, Any, int]]) -> list[Any]:
    """The windows of ``batches`` (see :func:`labelled_batches`) that have a ground-truth pose, one
    :class:`Batch` per episode."""
    from structalign_ros.core.data.batch import concat

    per: dict[int, list[Any]] = {}
    for batch, _, episode in batches:
        rows = None if batch.pose is None else batch.pose.isfinite().all(1)
        if rows is not None and rows.any():
            per.setdefault(episode, []).append(batch.select(rows.nonzero().squeeze(1)))
    return [concat(parts) for _, parts in sorted(per.items())]


def pose_quality(
    runner: Any, batches: Sequence[tuple[Any, Any, int]], config: Any, args: Any, layout: Any
) -> Any:
    """The model beside the baselines under every sensor condition (:mod:`core.eval.quality`) on the
    labelled windows of ``batches``, or None when there are none; ``--train-bags`` are read in the
    model's input ``layout``."""
    from structalign_ros.core.data.batch import concat
    from structalign_ros.core.data.dataset import labelled_episode
    from structalign_ros.core.eval.quality import leave_one_episode_out, model_pose, quality_report
    from structalign_ros.core.learn.baselines import fit_baselines

    episodes = _labelled_episodes(batches)
    if not episodes:
        return None
    kinds = {n: m.kind for n, m in config.modalities.items() if m.enabled}
    if args.train_bags:
        train = [e for e in (labelled_episode(p, config, layout) for p in args.train_bags) if e is not None]
        if not train:
            raise ValueError("the --train-bags have no ground-truth poses to fit the baselines on")
        baselines = fit_baselines(concat(train), kinds)
    elif len(episodes) >= 2:
        baselines = leave_one_episode_out(episodes, kinds, lambda b: fit_baselines(b, kinds))
    else:
        print(
            "structalign eval: no baselines: give --train-bags, or two or more labelled --bags for "
            "leave-one-episode-out",
            file=sys.stderr,
        )
        return None
    return quality_report(model_pose(runner), concat(episodes), baselines, kinds)


def format_table(report: dict[str, Any]) -> str:
    """The report as plain-text tables."""
    lines = [f"windows: {report['windows']} from {report['episodes']} episode(s)"]
    pose = report.get("pose")
    if pose:
        lines.append(
            f"EE pose: position {pose['position_mm_mean']:.1f} mm mean / {pose['position_mm_median']:.1f} "
            f"median; orientation {pose['orientation_deg_mean']:.2f} deg mean / "
            f"{pose['orientation_deg_median']:.2f} median  (n={pose['n']})"
        )
    else:
        lines.append("EE pose: no ground truth in these bags")
    lines.append("")
    lines.append(f"{'contact probe':<14} {'accuracy':>9} {'majority':>9} {'positive':>9} {'n':>6}")
    for name, res in report["contact"].items():
        if res is None:
            lines.append(f"{name:<14} {'(too few windows or one episode half empty)':>30}")
            continue
        acc, maj, pos = res["accuracy"], res["majority"], res["positive_rate"]
        lines.append(f"{name:<14} {acc:>9.3f} {maj:>9.3f} {pos:>9.3f} {res['n']:>6}")
    lines.append("")
    lines.append(f"{'retrieval':<22} {'mAP':>7} {'R@1':>7} {'chance':>7} {'R@1 250ms':>10} {'n':>5}")
    for pair, res in report["retrieval"].items():
        tol = f"{res['R@1_tol']:>10.3f}" if "R@1_tol" in res else f"{'-':>10}"
        lines.append(
            f"{pair:<22} {res['mAP']:>7.3f} {res['R@1']:>7.3f} {res['chance_R@1']:>7.3f} {tol} {res['n']:>5}"
        )
    lines.append("")
    lines.append(f"{'geometry':<22} {'NP':>7} {'GW':>9} {'n':>5}")
    for pair, res in report["geometry"].items():
        npres, gw = res["neighbourhood_preservation"], res["gw_discrepancy"]
        lines.append(f"{pair:<22} {npres:>7.3f} {gw:>9.4f} {res['n']:>5}")
    lines.append("")
    lam = report.get("lambda") or {}
    lines.append("lambda: " + ", ".join(f"{k} {v:.3f}" for k, v in lam.items()))
    return "\n".join(lines)


def plot(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """PNG plots: lambda, retrieval R@1 and mAP matrices, neighbourhood preservation, contact probes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = report["modalities"]
    m = len(names)
    written = []

    fig, ax = plt.subplots(figsize=(5, 3))
    lam = report.get("lambda") or report["lambda_mean"]
    ax.bar(list(lam), list(lam.values()), color="tab:blue")
    ax.set_ylabel("lambda")
    ax.set_title("learned modality weights")
    fig.tight_layout()
    written.append(out_dir / "lambda.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, (title, key, table) in zip(
        axes,
        (
            ("retrieval R@1 (query row -> gallery column)", "R@1", "retrieval"),
            ("retrieval mAP", "mAP", "retrieval"),
            ("neighbourhood preservation", "neighbourhood_preservation", "geometry"),
        ),
        strict=True,
    ):
        grid = np.full((m, m), np.nan)
        for pair, res in report[table].items():
            a, b = pair.split("->") if "->" in pair else pair.split("|")
            i, j = names.index(a), names.index(b)
            grid[i, j] = res[key]
            if table == "geometry":
                grid[j, i] = res[key]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(m), names, rotation=45, ha="right")
        ax.set_yticks(range(m), names)
        ax.set_title(title, fontsize=9)
        for i in range(m):
            for j in range(m):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    written.append(out_dir / "alignment.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    probes = {k: v for k, v in report["contact"].items() if v is not None}
    if probes:
        fig, ax = plt.subplots(figsize=(6, 3))
        x = np.arange(len(probes))
        ax.bar(x - 0.2, [v["accuracy"] for v in probes.values()], 0.4, label="linear probe")
        ax.bar(x + 0.2, [v["majority"] for v in probes.values()], 0.4, label="majority class")
        ax.set_xticks(x, list(probes), rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("contact accuracy")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out_dir / "contact.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def run(args: argparse.Namespace) -> int:
    import torch

    from structalign_ros.core.config import ConfigError
    from structalign_ros.core.config_io import apply_assignments, load_yaml
    from structalign_ros.core.data.bags import BagError
    from structalign_ros.core.eval.evaluation import evaluate
    from structalign_ros.core.learn.train import CheckpointError, load_checkpoint
    from structalign_ros.core.serve.export import onnx_bytes
    from structalign_ros.core.serve.runtime import Predictor

    try:
        ckpt = load_checkpoint(args.model)
        config = apply_assignments(load_yaml(args.config) if args.config else ckpt.config, args.set)
        if config.train.threads > 0:
            torch.set_num_threads(config.train.threads)
        model = ckpt.build_model().eval()
        wanted = [n for n in config.enabled_modalities]
        if tuple(wanted) != model.modalities:
            raise ConfigError(
                f"the config's modalities {wanted} are not the model's {list(model.modalities)}"
            )
        runner: Any = model
        if args.backend == "onnx":
            runner = Predictor.from_onnx(onnx_bytes(model), providers="CPUExecutionProvider", threads=1)
        # read once: the evaluation and the baselines' conditions see the same windows
        batches = list(labelled_batches(args.bags, config, args.batch_size, model.specs))
        report = evaluate(
            runner,
            batches,
            lambdas=model.lambdas.detach(),
            max_windows=args.max_windows,
            geometry_windows=args.geometry_windows,
        )
        if not args.no_baselines:
            report["quality"] = pose_quality(runner, batches, config, args, model.specs)
    except (CheckpointError, ConfigError, BagError, OSError, ValueError) as exc:
        print(f"structalign eval: {exc}", file=sys.stderr)
        return 1
    report["model"] = str(args.model)
    report["bags"] = [str(b) for b in args.bags]
    report["backend"] = args.backend
    out_dir = Path(args.out) if args.out else Path(args.model).with_name(Path(args.model).stem + "_eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(format_table(report))
    if report.get("quality"):
        from structalign_ros.core.eval.quality import format_quality

        print("\n" + format_quality(report["quality"]))
    if not args.no_plots:
        for path in plot(report, out_dir):
            print(f"wrote {path}")
    print(f"wrote {out_dir / 'eval.json'}")
    return 0
