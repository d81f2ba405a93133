r"""GOTMA (Geometric Optimal Transport for Manifold Alignment): geometry terms on every modality pair.

.. math::
    \mathcal{L} = \mathcal{L}_{CL} + \alpha\, (\mathcal{L}_{OT} + \mathcal{L}_{RC})

- ``L_CL``: pairwise InfoNCE (:class:`pairwise.PairwiseInfoNCE`).
- ``L_OT``: for each pair ``m1 < m2``, entropic GW between the two modalities' manifold distance
  matrices ``D^m`` (geodesic distances on the kNN graph of the embeddings,
  :func:`kernels.knn_geodesic_distances`), all pairs in one batched solve.
- ``L_RC`` (Riemannian consistency): for each pair and each window ``i``, the squared difference of
  the geodesic distances ``D^{m1}_ij`` and ``D^{m2}_ij`` over ``i``'s k nearest neighbours in ``m1``.

The geometry terms need one sample set across modalities: they use the windows in which every
modality is present (at least ``min_windows``; otherwise the step is contrastive only). The metrics
of the method, neighbourhood preservation and GW manifold discrepancy, are in :mod:`core.eval.metrics`.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from structalign_ros.core.data.batch import Batch
from structalign_ros.core.learn.kernels import knn_geodesic_distances
from structalign_ros.core.learn.models import ModelOutput
from structalign_ros.core.learn.objectives.base import Objective, ObjectiveResult
from structalign_ros.core.learn.objectives.pairwise import PairwiseInfoNCE
from structalign_ros.core.ot import OTConvergenceWarning, gromov_wasserstein2


class GOTMA(Objective):
    """Pairwise InfoNCE plus entropic-GW manifold alignment and Riemannian consistency.

    Args:
        temperature: of the contrastive term.
        alpha: weight of the two geometry terms.
        epsilon: entropic regularisation of the GW solves.
        gw_iterations, sinkhorn_iterations: the solver's fixed per-step budget.
        k: neighbours of the kNN graph and of the consistency term.
        min_windows: fewest complete windows for the geometry terms.
    """

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        alpha: float = 1.0,
        epsilon: float = 0.05,
        gw_iterations: int = 10,
        sinkhorn_iterations: int = 30,
        k: int = 5,
        min_windows: int = 8,
    ) -> None:
        super().__init__()
        self.contrastive = PairwiseInfoNCE(temperature=temperature)
        self.alpha = alpha
        self.epsilon = epsilon
        self.budget = {"max_iter": gw_iterations, "inner_max_iter": sinkhorn_iterations}
        self.k = k
        self.min_windows = min_windows

    def forward(self, out: ModelOutput, batch: Batch, lambdas: Tensor) -> ObjectiveResult:
        base = self.contrastive(out, batch, lambdas)
        metrics = dict(base.metrics)
        rows = batch.mask.all(1)
        n = int(rows.sum())
        if n < max(self.min_windows, self.k + 2):
            return base
        z = out.embeddings[rows].float().transpose(0, 1)  # (M, n, d)
        m = z.shape[0]
        D = knn_geodesic_distances(z, self.k)  # (M, n, n)
        first, second = torch.triu_indices(m, m, offset=1, device=z.device)  # (P,)
        with warnings.catch_warnings():
            # a fixed iteration budget per step is the design, not a failure
            warnings.simplefilter("ignore", OTConvergenceWarning)
            ot = gromov_wasserstein2(
                D[first], D[second], T0="identity", solver="entropic", epsilon=self.epsilon, **self.budget
            ).mean()
        # the k nearest neighbours of every window in the first modality of each pair
        eye = torch.eye(n, dtype=torch.bool, device=z.device)
        near = D[first].detach().masked_fill(eye, float("inf")).topk(self.k, dim=-1, largest=False).indices
        diff = (D[first] - D[second]).gather(-1, near)  # (P, n, k)
        rc = (diff * diff).mean()
        metrics.update({"gw": float(ot.detach()), "riemannian": float(rc.detach())})
        return ObjectiveResult(base.loss + self.alpha * (ot + rc), metrics)
