r"""MOVER (You & Liu, CIKM 2025): OT soft matching between modalities + volume (GAVE) losses.

For the anchor modality ``a`` and every other modality ``q``, an entropic OT plan between the batch's
embeddings with cost ``|v^a_i - v^q_j|^2`` (uniform marginals) soft-matches samples across
modalities, so the method also works on batches whose windows are not paired. Groups are formed by
*hard matching* (one of the paper's three strategies): anchor ``i`` with ``j_q(i) = argmax_j
pi^{(a,q)}_{ij}`` in every other modality. Then

.. math::
    \mathcal{L} = \mathcal{L}_{vc} + \alpha \sum_i w_i\, \mathrm{Vol}(v^a_i, \{v^q_{j_q(i)}\}), \qquad
    w_i \propto \prod_q B\,\pi^{(a,q)}_{i j_q(i)}

(the group probability of eq. 8 under a star factorisation through the anchor), and the volume
contrastive term ``L_vc`` (eq. 9) contrasts a positive group of anchor ``i`` against the groups
``(v^a_i, {v^q_j})`` of the other windows ``j != i``. Plans are weights, not functions to
differentiate: they are computed without autograd.

The positive. With ``paired=False`` it is the OT-matched group, as in the paper, for batches whose
windows are not paired. Our windows are time-synchronised, so by default (``paired=True``) the
positive is the window's own group: from randomly initialised encoders the OT matches are mostly
wrong (17 % right on the synthetic test data), and a contrastive term that pulls towards its own
wrong matches did not improve a linear probe in 40 steps, while the OT-weighted volume term keeps
its role either way.

Masks: each plan is solved over the windows where both modalities are present; a modality missing
from a matched window enters the volume as an orthogonal unit vector (:func:`gram.masked_vectors`),
i.e. the group is scored on the modalities it has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from structalign_ros.core.data.batch import Batch
from structalign_ros.core.learn.kernels import pairwise_sq_dists
from structalign_ros.core.learn.models import ModelOutput
from structalign_ros.core.learn.objectives.base import Objective, ObjectiveResult
from structalign_ros.core.learn.objectives.gram import cross_volumes, masked_vectors
from structalign_ros.core.ot import gram_volume, sinkhorn


class MOVER(Objective):
    """OT-matched Gram-volume loss plus volume contrastive loss.

    Args:
        temperature: softmax temperature of the contrastive term.
        epsilon: entropic regularisation of the matching plans (squared distances of unit vectors
            lie in ``[0, 4]``).
        alpha: weight of the OT-weighted volume term against the contrastive one (the paper's
            ``L_MOVER + lambda L_vc`` with ``alpha = 1 / lambda``, up to scale).
        anchor: index of the anchor modality.
        paired: the contrastive positive is the window's own group (time-synchronised windows)
            rather than the OT-matched one; see the module docstring.
    """

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        alpha: float = 1.0,
        anchor: int = 0,
        paired: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.epsilon = epsilon
        self.alpha = alpha
        self.anchor = anchor
        self.paired = paired

    @torch.no_grad()
    def match(self, z: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Hard matches and their log-probabilities for every anchor window and modality.

        Args:
            z: ``(B, M, d)`` unit embeddings; mask: ``(B, M)``.

        Returns:
            ``(B, M)`` long, the window matched to anchor ``i`` in modality ``q`` (``i`` itself for the
            anchor and where no plan exists), and ``(B, M)`` ``log(B * pi)`` of those matches (0 there).
        """
        b, m, _ = z.shape
        a = self.anchor
        index = torch.arange(b, device=z.device).unsqueeze(1).repeat(1, m)  # (B, M)
        log_prob = torch.zeros(b, m, device=z.device)
        for q in range(m):
            rows = mask[:, a].nonzero().squeeze(1)
            cols = mask[:, q].nonzero().squeeze(1)
            if q == a or len(rows) < 2 or len(cols) < 2:
                continue
            cost = pairwise_sq_dists(torch.cat([z[rows, a], z[cols, q]]))[: len(rows), len(rows) :]
            plan = sinkhorn(None, None, cost.float(), self.epsilon)  # (n_rows, n_cols)
            best = plan.argmax(1)
            index[rows, q] = cols[best]
            log_prob[rows, q] = torch.log((plan[torch.arange(len(rows)), best] * len(rows)).clamp_min(1e-30))
        return index, log_prob

    def forward(self, out: ModelOutput, batch: Batch, lambdas: Tensor) -> ObjectiveResult:
        z, mask = out.embeddings, batch.mask  # (B, M, d), (B, M)
        b, m, _ = z.shape
        a = self.anchor
        index, log_prob = self.match(z.detach(), mask)
        modality = torch.arange(m, device=z.device)
        lifted = masked_vectors(z, mask)  # (B, M, d+M)
        matched = lifted[index, modality]  # (B, M, d+M): anchor i with its matches
        anchors = mask[:, a] & (mask.sum(1) > 1)
        if not anchors.any():
            zero = z.sum() * 0.0
            return ObjectiveResult(zero, {"volume": 0.0, "contrastive": 0.0})
        vol_pos = gram_volume(matched)  # (B,)
        weights = torch.softmax(log_prob.sum(1).masked_fill(~anchors, float("-inf")), 0)  # (B,)
        volume_loss = (weights * vol_pos).sum()

        # negatives: anchor i with the other modalities of window j
        vol_neg = cross_volumes(lifted, a)  # (B_i, B_j)
        has_other = mask.sum(1) - mask[:, a].long() > 0
        neg_ok = has_other.unsqueeze(0) & ~torch.eye(b, dtype=torch.bool, device=z.device)
        positive = vol_neg.diagonal() if self.paired else vol_pos  # (B,)
        logits = torch.cat([-positive.unsqueeze(1), (-vol_neg).masked_fill(~neg_ok, float("-inf"))], 1)
        target = torch.zeros(b, dtype=torch.long, device=z.device)
        contrastive = F.cross_entropy(logits[anchors] / self.temperature, target[anchors])
        loss = contrastive + self.alpha * volume_loss
        metrics = {
            "volume": float(volume_loss.detach()),
            "contrastive": float(contrastive.detach()),
            "match_rate": float(
                (index[anchors] == torch.arange(b, device=z.device)[anchors, None]).float().mean()
            ),
        }
        return ObjectiveResult(loss, metrics)
