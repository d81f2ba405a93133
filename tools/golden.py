"""Write a shipped model's golden file: two windows of a recorded episode and the model's outputs on
them, every modality present and under two masks, for ``test/core/test_shipped_model.py``.

``make model`` runs it after training, on the held-out episode 107:

    .venv/bin/python tools/golden.py --model models/sim_default.pt --bag build/sim_default/ep107 \
        --out models/sim_default.golden.npz
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

from structalign_ros.core.data.batch import Batch, to_batch
from structalign_ros.core.data.dataset import iter_windows
from structalign_ros.core.learn.models import MultimodalModel
from structalign_ros.core.learn.train import load_checkpoint

# Windows taken from the episode: one early (every stream started), one a few seconds in.
PICK = (30, 150)


def golden_batch(windows: Batch) -> Batch:
    """The two ``windows`` as four rows: both whole, then the first without its camera and the second
    with only the wrench and the IMU (``modalities`` must hold those names)."""
    both = Batch(
        {k: torch.cat([v, v]) for k, v in windows.inputs.items()},
        torch.cat([windows.mask, windows.mask]),
        windows.modalities,
    )
    keep = torch.ones_like(both.mask)
    keep[2, windows.modalities.index("rgb")] = False
    keep[3] = torch.tensor([m in ("wrench", "imu") for m in windows.modalities])
    return both.masked(keep)


@torch.no_grad()
def outputs(model: MultimodalModel, batch: Batch) -> dict[str, np.ndarray]:
    out = model.eval()(batch.inputs, batch.mask)
    return {name: value.numpy() for name, value in out._asdict().items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the checkpoint (.pt)")
    parser.add_argument("--bag", required=True, help="a recorded episode of the model's robot")
    parser.add_argument("--out", required=True, help="the .npz to write")
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoint = load_checkpoint(args.model)
    model = checkpoint.build_model()
    items = list(itertools.islice(iter_windows([args.bag], checkpoint.config), max(PICK) + 1))
    batch = golden_batch(to_batch([items[i][0] for i in PICK], checkpoint.specs))
    result = outputs(model, batch)
    np.savez_compressed(
        Path(args.out),
        modalities=np.array(batch.modalities),
        mask=batch.mask.numpy(),
        **{f"input.{k}": v.numpy() for k, v in batch.inputs.items()},
        **{f"output.{k}": v for k, v in result.items()},
    )
    print(f"wrote {args.out}: windows {PICK} of {args.bag}, outputs {sorted(result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
