import math

import pytest
import torch

from structalign_ros.core.ot import gram_volume


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, dtype=torch.float64, generator=g), dim=-1)


@pytest.mark.parametrize("theta", [0.0, 1e-6, 0.3, math.pi / 2, 2.5])
def test_two_unit_vectors_span_sin_theta(theta):
    V = torch.tensor([[1.0, 0.0, 0.0], [math.cos(theta), math.sin(theta), 0.0]], dtype=torch.float64)
    assert float(gram_volume(V)) == pytest.approx(abs(math.sin(theta)), abs=1e-12)


def test_matches_sqrt_det_and_its_gradient_when_well_conditioned():
    V = _unit(5, 4, 16).requires_grad_(True)
    gram_volume(V).sum().backward()
    W = V.detach().clone().requires_grad_(True)
    ref = torch.sqrt(torch.linalg.det(W @ W.transpose(-1, -2)))
    ref.sum().backward()
    torch.testing.assert_close(gram_volume(V.detach()), ref.detach())
    torch.testing.assert_close(V.grad, W.grad)


@pytest.mark.parametrize(
    "V",
    [
        torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]),  # duplicated
        torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1e-9, 0.0]]),  # nearly collinear
        torch.zeros(3, 4),  # zero vectors
        torch.tensor([[0.6, 0.8, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]),
    ],
)
def test_degenerate_inputs_have_finite_value_and_gradient(V):
    V = V.double().requires_grad_(True)
    vol = gram_volume(V)
    vol.backward()
    assert torch.isfinite(vol) and torch.isfinite(V.grad).all()


@pytest.mark.parametrize("theta", [1e-3, 1e-6])
def test_gradient_near_collinearity_is_the_true_one(theta):
    # vol(v1, v2) = |v1 x v2|: w.r.t. v2 the gradient lies in the plane, orthogonal to v1, of norm |v1| = 1
    V = torch.tensor(
        [[1.0, 0.0, 0.0], [math.cos(theta), math.sin(theta), 0.0]], dtype=torch.float64, requires_grad=True
    )
    gram_volume(V).backward()
    torch.testing.assert_close(
        V.grad[1], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_exact_duplicates_get_a_bounded_subgradient():
    # not differentiable there: any g with |g| <= 1 orthogonal to v1 is a subgradient
    V = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    gram_volume(V).backward()
    assert torch.isfinite(V.grad).all() and float(V.grad[1].norm()) <= 1.0 + 1e-12


def test_batched_equals_looped_and_half_precision():
    V = _unit(6, 3, 8, seed=1)
    batched = gram_volume(V)
    torch.testing.assert_close(batched, torch.stack([gram_volume(v) for v in V]))
    half = gram_volume(V.half())
    assert half.dtype == torch.float16 and torch.allclose(half.double(), batched, atol=2e-3)


def test_more_vectors_than_dimensions_is_an_error():
    with pytest.raises(ValueError):
        gram_volume(torch.randn(4, 3))
