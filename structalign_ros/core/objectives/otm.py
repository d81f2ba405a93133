r"""OTM: a fused-GW barycenter mixes the modalities' latent codes; per-modality decoders reconstruct.

Each step a random subset of modalities is hidden (stochastic masks, on top of the batch's own).
The visible modalities' embeddings ``Y_m (n, d)`` and their cosine structures ``K_m`` are mixed by
the fused-GW barycenter with the renormalised weights ``lambda``:
``X = FGW-barycenter({(Y_m, K_m)}, lambda, structure weight)`` (:func:`core.ot.fgw_barycenter`,
differentiable in the ``Y_m`` with plans fixed). A decoder per modality maps the mixed code back,
and every modality present in the batch (``P``), hidden ones included, must be recovered from it:

.. math::
    \mathcal{L} = \mathcal{L}_c
        + \alpha\, \frac{1}{|P|} \sum_{m \in P} \big(1 - \cos(g_m(\mathbf{X}), \mathbf{Y}_m)\big)

Reconstructing hidden modalities from the mix of the others is what makes the representation robust
to a missing sensor. The barycenter couples windows through OT plans rather than assuming row ``i``
of every modality is the same window, which is what makes the mixer usable for unaligned batches;
with paired windows the plans start from the identity. The mix uses the windows in which every
visible modality is present (at least ``min_windows``; otherwise the step is contrastive only).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structalign_ros.core.batch import Batch
from structalign_ros.core.kernels import cosine_kernel
from structalign_ros.core.models import ModelOutput
from structalign_ros.core.objectives.base import Objective, ObjectiveResult
from structalign_ros.core.objectives.pairwise import PairwiseInfoNCE
from structalign_ros.core.ot import OTConvergenceWarning, fgw_barycenter


class OTM(Objective):
    """Pairwise InfoNCE plus reconstruction of every modality from the FGW mix of the visible ones.

    Args:
        modalities: number of modalities ``M`` (one decoder each).
        dim: embedding size ``d``.
        temperature: of the contrastive term.
        alpha: weight of the reconstruction term.
        structure_weight: the FGW barycenter's weight on structure against features, in ``[0, 1]``.
        hide: probability of hiding each modality in a step (at least one stays visible).
        epsilon, gw_iterations, sinkhorn_iterations: the barycenter solver and its per-step budget.
        min_windows: fewest usable windows for the mix.
    """

    def __init__(
        self,
        modalities: int,
        dim: int,
        temperature: float = 0.1,
        alpha: float = 1.0,
        structure_weight: float = 0.5,
        hide: float = 0.3,
        epsilon: float = 0.05,
        gw_iterations: int = 10,
        sinkhorn_iterations: int = 30,
        min_windows: int = 8,
    ) -> None:
        super().__init__()
        self.contrastive = PairwiseInfoNCE(temperature)
        self.decoders = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim)) for _ in range(modalities)
        )
        self.alpha = alpha
        self.structure_weight = structure_weight
        self.hide = hide
        self.epsilon = epsilon
        self.budget = {"max_iter": gw_iterations, "inner_max_iter": sinkhorn_iterations}
        self.min_windows = min_windows

    def visible(self, m: int, device: torch.device) -> Tensor:
        """``(M,)`` bool: this step's visible modalities, each hidden with probability ``hide``."""
        keep = torch.rand(m, device=device) >= self.hide
        keep[torch.randint(0, m, (1,), device=device)] = True
        return keep

    def forward(self, out: ModelOutput, batch: Batch, lambdas: Tensor) -> ObjectiveResult:
        base = self.contrastive(out, batch, lambdas)
        z, mask = out.embeddings, batch.mask  # (B, M, d), (B, M)
        m = z.shape[1]
        keep = (
            self.visible(m, z.device) if self.training else torch.ones(m, dtype=torch.bool, device=z.device)
        )
        rows = mask[:, keep].all(1)
        if int(rows.sum()) < self.min_windows:
            return base
        Y = z[rows].float().transpose(0, 1)  # (M, n, d)
        lam = lambdas.float()[keep]
        with warnings.catch_warnings():
            # a fixed iteration budget per step is the design, not a failure
            warnings.simplefilter("ignore", OTConvergenceWarning)
            mix = fgw_barycenter(
                Y[keep],
                cosine_kernel(Y[keep]),
                lam / lam.sum(),
                alpha=self.structure_weight,
                epsilon=self.epsilon,
                gw_steps=2,
                **self.budget,
            ).X  # (n, d)
        present = mask[rows]  # (n, M): every modality the batch has, hidden ones included
        errors = []
        for i, decoder in enumerate(self.decoders):
            recon = decoder(mix)  # (n, d)
            err = 1.0 - F.cosine_similarity(recon, Y[i], dim=-1)  # (n,)
            errors.append(err[present[:, i]])
        rec = torch.cat(errors).mean()
        hidden = [e for e, k in zip(errors, keep.tolist(), strict=True) if not k]
        metrics = {**base.metrics, "reconstruction": float(rec.detach())}
        if hidden:
            metrics["reconstruction_hidden"] = float(torch.cat(hidden).mean().detach())
        return ObjectiveResult(base.loss + self.alpha * rec, metrics)
