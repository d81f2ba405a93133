r"""Gram volume: the k-dimensional volume of the parallelotope spanned by k vectors.

.. math::
    \mathrm{vol}(\mathbf{v}_1, \dots, \mathbf{v}_k) = \sqrt{\det \mathbf{V}\mathbf{V}^\top}
        = \prod_{i=1}^k \sigma_i(\mathbf{V})

GRAM (Cicchetti et al. 2024) and MOVER's GAVE use it on unit-norm modality embeddings: small volume
means aligned. For two unit vectors it is :math:`\sin\theta`.

Differentiating :math:`\sqrt{\det G}` through ``det`` or ``cholesky`` divides by the volume and gives
NaN for (nearly) collinear vectors, which is exactly where aligned embeddings sit. The volume is
Lipschitz in V, however: with :math:`\mathbf{V} = \mathbf{U}\,\mathrm{diag}(\sigma)\,\mathbf{W}^\top`,
:math:`\partial\,\mathrm{vol}/\partial \mathbf{V} = \mathbf{U}\,\mathrm{diag}(c)\,\mathbf{W}^\top` with
:math:`c_i = \prod_{j \ne i} \sigma_j`, a product with no division, finite everywhere. U and the
singular values come from the eigendecomposition of the small k×k Gram matrix; where a singular value
is zero its direction is any unit vector, a valid subgradient.
"""

from __future__ import annotations

import torch

from ._base import compute_dtype


class _GramVolume(torch.autograd.Function):
    @staticmethod
    def forward(ctx, V: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # eigh of the small (k, k) Gram matrix instead of an SVD of (k, d): ~7x cheaper for GRAM's
        # B^2 volumes. sigma_i is read as |W_i^T V| rather than sqrt(s_i): accurate to machine epsilon
        # in absolute terms (like an SVD), where sqrt(s_i) would lose half the digits of small volumes.
        _, W = torch.linalg.eigh(V @ V.transpose(-1, -2))
        P = W.transpose(-1, -2) @ V  # (..., k, d), rows sigma_i z_i
        S = torch.linalg.vector_norm(P, dim=-1)
        Z = P / S.clamp_min(torch.finfo(V.dtype).tiny).unsqueeze(-1)  # unit rows (0 where sigma_i = 0)
        ones = torch.ones_like(S[..., :1])
        # c_i = prod_{j != i} s_j from prefix and suffix products: no division by a zero s_i
        prefix = torch.cumprod(torch.cat([ones, S[..., :-1]], -1), -1)
        suffix = torch.cumprod(torch.cat([ones, S.flip(-1)[..., :-1]], -1), -1).flip(-1)
        ctx.save_for_backward(W, prefix * suffix, Z)
        return S.prod(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        W, c, Z = ctx.saved_tensors
        return grad[..., None, None] * ((W * c.unsqueeze(-2)) @ Z)


def gram_volume(V: torch.Tensor) -> torch.Tensor:
    """Volume spanned by the rows of ``V``.

    Args:
        V: (..., k, d) with k <= d: k vectors per item (e.g. one embedding per modality).

    Returns:
        (...,) volumes, in the dtype of ``V`` (computed in float32 or float64). Value and gradient are
        finite for collinear, duplicated or zero vectors.
    """
    k, d = V.shape[-2:]
    if k > d:
        raise ValueError(f"{k} vectors in {d} dimensions always have zero volume")
    return _GramVolume.apply(V.to(compute_dtype(V))).to(V.dtype)
