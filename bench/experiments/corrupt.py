"""E2's and E4's corruptions of a modality, and unaligned (shuffled) training pairs."""

from __future__ import annotations

import torch

from structalign_ros.core.data.batch import Batch

from .data import Split


class Corruptor:
    """E2's corruptions of one modality at severity ``s`` in ``[0, 1]`` (0 = clean), per batch.

    - ``noise``: ``(1 - s) x + s xi``, ``xi`` Gaussian with the modality's per-element mean and std
      over the training set (at ``s = 1`` pure noise with the same marginals);
    - ``shuffle``: a share ``s`` of the windows carry this modality from another window of the batch
      (out of time, pairing broken);
    - ``constant``: ``(1 - s) x + s mean`` (at ``s = 1`` a constant signal).
    """

    KINDS = ("noise", "shuffle", "constant")

    def __init__(self, data: Split) -> None:
        self.stats = {}
        for name, x in data.batch.inputs.items():
            xf = x.float()
            self.stats[name] = (xf.mean(0), xf.std(0))

    def __call__(self, batch: Batch, name: str, kind: str, s: float, g: torch.Generator) -> Batch:
        if s <= 0:
            return batch
        x = batch.inputs[name]
        xf = x.float()
        mean, std = self.stats[name]
        if kind == "noise":
            out = (1 - s) * xf + s * (mean + std * torch.randn(xf.shape, generator=g))
        elif kind == "constant":
            out = (1 - s) * xf + s * mean
        elif kind == "shuffle":
            out = xf.clone()
            rows = torch.nonzero(torch.rand(len(x), generator=g) < s).squeeze(1)
            out[rows] = xf[rows[torch.randperm(len(rows), generator=g)]]
        else:
            raise ValueError(kind)
        if x.dtype == torch.uint8:
            out = out.round().clamp(0, 255).to(torch.uint8)
        inputs = {**batch.inputs, name: out.to(x.dtype)}
        return Batch(inputs, batch.mask, batch.modalities, batch.stamps_ns, batch.pose)


def shuffle_pairs(batch: Batch, g: torch.Generator, frac: float, anchor: int = 0) -> Batch:
    """Unaligned training pairs: in a share ``frac`` of the windows, every modality but the anchor is
    permuted among those windows, independently per modality."""
    rows = torch.nonzero(torch.rand(len(batch), generator=g) < frac).squeeze(1)
    if len(rows) < 2:
        return batch
    inputs, mask = dict(batch.inputs), batch.mask.clone()
    for m, name in enumerate(batch.modalities):
        if m == anchor:
            continue
        p = rows[torch.randperm(len(rows), generator=g)]
        x = inputs[name].clone()
        x[rows] = inputs[name][p]
        inputs[name] = x
        mask[rows, m] = batch.mask[p, m]
    return Batch(inputs, mask, batch.modalities, batch.stamps_ns, batch.pose)


def without(batch: Batch, name: str) -> Batch:
    """The batch with modality ``name`` missing (zeros, mask False), as the window pipeline delivers it."""
    m = batch.modalities.index(name)
    mask = batch.mask.clone()
    mask[:, m] = False
    inputs = {**batch.inputs, name: torch.zeros_like(batch.inputs[name])}
    return Batch(inputs, mask, batch.modalities, batch.stamps_ns, batch.pose)
