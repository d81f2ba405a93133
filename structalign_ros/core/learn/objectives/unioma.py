r"""UniOMA (Zu, Luck, Yu): a contrastive objective plus a GW-barycenter structural regulariser.

.. math::
    \mathcal{L} = \mathcal{L}_c + \alpha \sum_m \lambda_m\, d_{gw}(\mathbf{C}^*, \mathbf{K}_z^m)
        - \beta H(\lambda), \qquad
    \mathbf{C}^* = \arg\min_{\mathbf{C}} \sum_m \lambda_m\, d_{gw}(\mathbf{C}, \mathbf{K}_x^m)

``K_x^m`` are the input kernels of the batch (:class:`core.learn.kernels.InputKernels`), ``K_z^m`` the RBF
kernels of the embeddings (median bandwidth, so both sides are unit-scale and comparable under the
square loss), ``lambda = softmax(logits)`` the model's modality weights. One barycenter against all
M modalities keeps the cost linear in M, unlike the M(M-1)/2 pairwise GW terms.

``d_gw`` here is the square-loss GW discrepancy of the OT engine (a distance, minimised), the usual
reading of the paper's trace form for normalised kernels. Its gradient is the envelope gradient: plans
are solved without autograd and held fixed; the barycenter is differentiable in lambda.

Lambda collapse. Without a prior, the gradient on lambda only ever moves weight to the modality with
the smallest GW term, and lambda ends on a vertex of the simplex. The remedy chosen is the entropy
prior ``- beta H(lambda)`` (``objective.lambda_entropy``): at a stationary point
``lambda_m ~ exp(-alpha d_m / beta)``, a softmax over the GW terms with temperature ``beta / alpha``.
A modality whose structure disagrees with the consensus (a corrupted sensor) still loses weight;
none takes all of it. It costs one scalar per step, unlike held-out updates of lambda.

Masks: the structural term needs one sample set for all M kernels, so it uses the windows in which
every modality is present; with fewer than ``min_windows`` of them the step is contrastive only.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from structalign_ros.core.data.batch import Batch
from structalign_ros.core.learn.kernels import InputKernels, rbf_kernel
from structalign_ros.core.learn.models import ModelOutput
from structalign_ros.core.learn.objectives.base import Objective, ObjectiveResult
from structalign_ros.core.ot import OTConvergenceWarning, gromov_wasserstein2, gw_barycenter


class UniOMA(Objective):
    """``base`` plus the lambda-weighted GW distance of every embedding kernel to the input consensus.

    Args:
        base: the contrastive objective (pairwise, Symile or GRAM).
        kernels: input kernels of the batch's modalities.
        alpha: weight of the structural term.
        epsilon: step regularisation of the GW solvers.
        gw_iterations, sinkhorn_iterations: the solvers' fixed per-step budget (see the config).
        lambda_entropy: beta, the entropy prior's strength (see the module docstring).
        min_windows: fewest complete windows for the structural term.
    """

    def __init__(
        self,
        base: Objective,
        kernels: InputKernels,
        *,
        alpha: float = 1.0,
        epsilon: float = 0.05,
        gw_iterations: int = 10,
        sinkhorn_iterations: int = 30,
        lambda_entropy: float = 0.01,
        min_windows: int = 8,
    ) -> None:
        super().__init__()
        self.base = base
        self.kernels = kernels
        self.alpha = alpha
        self.epsilon = epsilon
        self.budget = {"max_iter": gw_iterations, "inner_max_iter": sinkhorn_iterations}
        self.lambda_entropy = lambda_entropy
        self.min_windows = min_windows

    def structure(self, out: ModelOutput, batch: Batch, lambdas: Tensor) -> tuple[Tensor, Tensor] | None:
        """Per-modality GW distances ``(M,)`` to the consensus and the consensus ``(n, n)``, or None."""
        rows = batch.mask.all(1)
        if int(rows.sum()) < self.min_windows:
            return None
        Kx = self.kernels(batch, rows)  # (M, n, n)
        z = out.embeddings[rows].float().transpose(0, 1)  # (M, n, d)
        Kz = rbf_kernel(z)  # (M, n, n)
        m = Kz.shape[0]
        with warnings.catch_warnings():
            # a fixed iteration budget per step is the design (see gw_iterations), not a failure
            warnings.simplefilter("ignore", OTConvergenceWarning)
            bary = gw_barycenter(
                Kx, lambdas.float(), T0="identity", epsilon=self.epsilon, gw_steps=2, **self.budget
            )
            C = bary.C.expand(m, -1, -1)
            d = gromov_wasserstein2(C, Kz, T0="identity", epsilon=self.epsilon, **self.budget)  # (M,)
        return d, bary.C

    def forward(self, out: ModelOutput, batch: Batch, lambdas: Tensor) -> ObjectiveResult:
        base = self.base(out, batch, lambdas)
        metrics = dict(base.metrics)
        entropy = -(lambdas * torch.log(lambdas.clamp_min(1e-12))).sum()
        loss = base.loss - self.lambda_entropy * entropy
        found = self.structure(out, batch, lambdas)
        if found is not None:
            d, _ = found
            reg = (lambdas * d).sum()
            loss = loss + self.alpha * reg
            metrics["gw"] = float(reg.detach())
            metrics.update({f"gw_{i}": float(v) for i, v in enumerate(d.detach())})
        metrics["lambda_entropy"] = float(entropy.detach())
        return ObjectiveResult(loss, metrics)
