r"""OTM: a fused-GW barycenter mixes the modalities' latent codes; per-modality decoders reconstruct.

Each step a random subset of modalities is hidden (stochastic masks, on top of the batch's own).
The visible modalities' embeddings ``Y_m (n, d)`` and their cosine structures ``K_m`` are mixed by
the fused-GW barycenter with the renormalised weights ``lambda``:
``X = FGW-barycenter({(Y_m, K_m)}, lambda, structure weight)`` (:func:`core.ot.fgw_barycenter`,
differentiable in the ``Y_m`` with plans fixed). A decoder per modality maps the mixed code back,
and every modality present in the batch (``P``), hidden ones included, must be recovered from it:

.. math::
    \mathcal{L} = \mathcal{L}_c
        + \alpha\, \frac{1}{|P|} \sum_{m \in P} n \sum_{i,j} T_{m,ij}\,
          \big(1 - \cos(g_m(\mathbf{X})_i, \mathbf{Y}_{m,j})\big)

Reconstructing hidden modalities from the mix of the others is what makes the representation robust
to a missing sensor.

Two modes, chosen by the caller (``aligned``), because a batch cannot tell whether its rows are paired:

- ``aligned=True`` (time-synchronised windows, the default): row ``i`` of every modality is the same
  window. The barycenter of the visible modalities starts from the identity plans (the exact block
  optimum for paired samples) and ``T_m`` in the loss is the identity ``I / n``: row ``i`` of the mix
  reconstructs row ``i`` of each modality.
- ``aligned=False`` (unaligned batches, OTM's setting): nothing is assumed about rows. The barycenter
  of *all* present modalities starts from the reference modality (the visible one with the largest
  lambda: its features, its structure and the identity plan to itself) and the product plan ``p q^T``
  to every other modality, so the FGW steps have to find the correspondences. The mix is the
  lambda-weighted pushforward of the visible modalities only, ``X = sum_{m visible} w_m n T_m Y_m``
  (the paper's eq. 3 with modality-level masks), and each modality is reconstructed through its own
  plan ``T_m`` (the paper's eq. 4 read as a plan-weighted error): hidden modalities take part in the
  correspondences but never in the content of the mix.

The mix uses the windows in which every modality it needs is present (visible ones when aligned, all
when unaligned; at least ``min_windows``; otherwise the step is contrastive only). The contrastive term
is pairwise InfoNCE on row pairs either way: with partly shuffled training pairs it sees some wrong
positives, which is the caller's trade-off (``contrastive=0`` turns it off).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structalign_ros.core.data.batch import Batch
from structalign_ros.core.learn.kernels import cosine_kernel
from structalign_ros.core.learn.models import ModelOutput
from structalign_ros.core.learn.objectives.base import Objective, ObjectiveResult
from structalign_ros.core.learn.objectives.pairwise import PairwiseInfoNCE
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
        aligned: rows of every modality are the same windows (see the module docstring); False for
            unaligned batches, where the plans are searched from the product coupling.
        unaligned_epsilon: proximal step regularisation of the unaligned search, which starts far from
            a solution and needs bigger steps than the identity start.
        contrastive: weight of the row-paired contrastive term.
    """

    def __init__(
        self,
        modalities: int,
        dim: int,
        *,
        temperature: float = 0.1,
        alpha: float = 1.0,
        structure_weight: float = 0.5,
        hide: float = 0.3,
        epsilon: float = 0.05,
        gw_iterations: int = 10,
        sinkhorn_iterations: int = 30,
        min_windows: int = 8,
        aligned: bool = True,
        unaligned_epsilon: float = 0.01,
        contrastive: float = 1.0,
    ) -> None:
        super().__init__()
        self.contrastive = PairwiseInfoNCE(temperature=temperature)
        self.decoders = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim)) for _ in range(modalities)
        )
        self.alpha = alpha
        self.structure_weight = structure_weight
        self.hide = hide
        self.epsilon = epsilon
        self.budget = {"max_iter": gw_iterations, "inner_max_iter": sinkhorn_iterations}
        self.min_windows = min_windows
        self.aligned = aligned
        self.unaligned_epsilon = unaligned_epsilon
        self.contrastive_weight = contrastive

    def visible(self, m: int, device: torch.device) -> Tensor:
        """``(M,)`` bool: this step's visible modalities, each hidden with probability ``hide``."""
        keep = torch.rand(m, device=device) >= self.hide
        keep[torch.randint(0, m, (1,), device=device)] = True
        return keep

    def mix(self, Y: Tensor, lambdas: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        """The mixed code and the plans that reconstruct each modality from it.

        Args:
            Y: ``(M, n, d)`` embeddings of the usable windows; lambdas: ``(M,)``; keep: ``(M,)`` bool.

        Returns:
            ``X (n, d)``, differentiable in ``Y`` and ``lambdas``, and ``plans (M, n, n)`` (fixed),
            ``plans[m][i, j]`` the mass between mixed code ``i`` and window ``j`` of modality ``m``.
        """
        lam = lambdas.float()
        m, n, _ = Y.shape
        with warnings.catch_warnings():
            # a fixed iteration budget per step is the design, not a failure
            warnings.simplefilter("ignore", OTConvergenceWarning)
            if self.aligned:
                X = fgw_barycenter(
                    Y[keep],
                    cosine_kernel(Y[keep]),
                    lam[keep] / lam[keep].sum(),
                    alpha=self.structure_weight,
                    T0="identity",
                    epsilon=self.epsilon,
                    gw_steps=2,
                    **self.budget,
                ).X  # (n, d)
                eye = torch.eye(n, dtype=X.dtype, device=X.device) / n
                return X, eye.expand(m, n, n)
            ref = int(torch.where(keep, lam.detach(), -1.0).argmax())
            K = cosine_kernel(Y)
            T0 = torch.full((m, n, n), 1.0 / n**2, dtype=Y.dtype, device=Y.device)
            T0[ref] = torch.eye(n, dtype=Y.dtype, device=Y.device) / n
            plans = fgw_barycenter(
                Y.detach(),
                K.detach(),
                lam.detach() / lam.detach().sum(),
                alpha=self.structure_weight,
                init_C=K[ref].detach(),
                init_X=Y[ref].detach(),
                T0=T0,
                epsilon=self.unaligned_epsilon,
                gw_steps=2,
                **self.budget,
            ).plans.detach()  # (M, n, n)
        w = lam * keep
        w = w / w.sum()
        X = n * torch.einsum("m,mij,mjd->id", w, plans, Y)  # pushforward of the visible modalities
        return X, plans

    def forward(self, out: ModelOutput, batch: Batch, lambdas: Tensor) -> ObjectiveResult:
        base = self.contrastive(out, batch, lambdas)
        base_loss = self.contrastive_weight * base.loss
        z, mask = out.embeddings, batch.mask  # (B, M, d), (B, M)
        m = z.shape[1]
        keep = (
            self.visible(m, z.device) if self.training else torch.ones(m, dtype=torch.bool, device=z.device)
        )
        rows = mask[:, keep].all(1) if self.aligned else mask.all(1)
        if int(rows.sum()) < self.min_windows:
            return ObjectiveResult(base_loss, base.metrics)
        Y = z[rows].float().transpose(0, 1)  # (M, n, d)
        n = Y.shape[1]
        X, plans = self.mix(Y, lambdas, keep)
        present = mask[rows]  # (n, M): every modality the batch has, hidden ones included
        errors = []
        for i, decoder in enumerate(self.decoders):
            recon = F.normalize(decoder(X), dim=-1)  # (n, d)
            err = 1.0 - recon @ F.normalize(Y[i], dim=-1).T  # (n mixed codes, n windows)
            per_window = n * (plans[i] * err).sum(0)  # (n,): plan-weighted error of window j
            errors.append(per_window[present[:, i]])
        rec = torch.cat(errors).mean()
        hidden = [e for e, k in zip(errors, keep.tolist(), strict=True) if not k]
        metrics = {**base.metrics, "reconstruction": float(rec.detach())}
        if hidden:
            metrics["reconstruction_hidden"] = float(torch.cat(hidden).mean().detach())
        return ObjectiveResult(base_loss + self.alpha * rec, metrics)
