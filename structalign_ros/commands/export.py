"""``structalign export``: a checkpoint -> an ONNX file with a dynamic batch, parity-checked."""

from __future__ import annotations

import argparse
import sys

import torch

from structalign_ros.core.learn.train import CheckpointError, load_checkpoint
from structalign_ros.core.serve.export import example_batch, export_onnx
from structalign_ros.core.serve.runtime import check_parity


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint written by training (.pt)")
    parser.add_argument("output", help="ONNX file to write")
    parser.add_argument(
        "--atol", type=float, default=1e-4, help="parity tolerance against torch (default 1e-4)"
    )
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime parity check")


def run(args: argparse.Namespace) -> int:
    try:
        model = load_checkpoint(args.checkpoint).build_model().eval()
    except CheckpointError as exc:
        print(f"structalign export: {exc}", file=sys.stderr)
        return 1
    export_onnx(model, example_batch(model), args.output)
    if not args.no_check:
        # a batch size other than the traced one, with inputs that exercise every encoder
        probe = example_batch(model, size=3)
        gen = torch.Generator().manual_seed(0)
        for name, x in probe.inputs.items():
            probe.inputs[name] = (
                torch.rand(x.shape, generator=gen) * (255 if x.dtype == torch.uint8 else 1)
            ).to(x.dtype)
        probe.mask[1, 0] = False
        try:
            worst = check_parity(model, args.output, probe, args.atol)
        except AssertionError as exc:
            print(f"structalign export: {exc}", file=sys.stderr)
            return 1
        print(f"parity: max |torch - onnxruntime| = {worst:.2e} (tolerance {args.atol})")
    print(f"wrote {args.output}")
    return 0
