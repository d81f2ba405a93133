"""OTM on unaligned batches: the plans, not the row order, decide what reconstructs what."""

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F

from structalign_ros.core.learn.kernels import cosine_kernel
from structalign_ros.core.learn.models import ModelOutput
from structalign_ros.core.learn.objectives import OTM
from structalign_ros.core.ot import fgw_value


@pytest.fixture(autouse=True)
def one_thread():
    """Small solves on a shared 2-core machine: OpenMP threads spin-wait on each other (docs/OT.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _Batch:
    def __init__(self, mask):
        self.mask = mask


def codes(n=24, m=3, d=16, seed=0):
    """Paired unit codes of ``m`` modalities (clusters + within-cluster spread), and a permutation."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, d, generator=g)
    base = centres[torch.randint(0, 4, (n,), generator=g)] + 0.5 * torch.randn(n, d, generator=g)
    z = F.normalize(base.unsqueeze(1) + 0.05 * torch.randn(n, m, d, generator=g), dim=-1)
    return z, torch.randperm(n, generator=g)


def shuffled(z, perm, modality=1):
    """Rows of one modality permuted: window ``j`` of that modality is window ``perm[j]`` of the others."""
    z = z.clone()
    z[:, modality] = z[perm, modality]
    return z


def output(z):
    n, m, _ = z.shape
    return ModelOutput(z, z.mean(1), torch.ones(n, m) / m, torch.zeros(n, 9), torch.zeros(n, m, 13))


def test_unaligned_plans_recover_a_permutation_that_pot_confirms():
    z, perm = codes()
    zp = shuffled(z, perm)
    n, m, _ = zp.shape
    otm = OTM(m, zp.shape[-1], aligned=False)
    Y = zp.transpose(0, 1)
    _, plans = otm.mix(Y, torch.ones(m) / m, torch.ones(m, dtype=torch.bool))
    # reference is modality 0 (equal lambdas): code i is window i of modality 0
    assert torch.equal(plans[1].argmax(0), perm)
    assert torch.equal(plans[2].argmax(0), torch.arange(n))
    assert torch.allclose(plans.sum(-1), torch.full((m, n), 1.0 / n), atol=1e-6)

    # POT's exact FGW between modality 0 and the shuffled modality 1 finds the same correspondence,
    # and our composed plan (modality 0 -> codes -> modality 1) is no worse under its objective
    y0, y1 = Y[0].double(), Y[1].double()
    C0, C1 = cosine_kernel(y0), cosine_kernel(y1)
    M = torch.cdist(y0, y1).square()
    T_pot, log = ot.gromov.fused_gromov_wasserstein(
        M.numpy(), C0.numpy(), C1.numpy(), alpha=0.5, loss_fun="square_loss", log=True
    )
    assert np.array_equal(T_pot.argmax(0), perm.numpy())
    composed = (n * plans[0].T.double() @ plans[1].double()).unsqueeze(0)
    ours = float(fgw_value(M[None], C0[None], C1[None], composed, 0.5))
    assert ours <= log["fgw_dist"] + 1e-3


def test_hidden_modalities_take_part_in_correspondences_not_in_the_mix():
    z, perm = codes(seed=1)
    Y = shuffled(z, perm).transpose(0, 1).clone().requires_grad_(True)
    otm = OTM(3, Y.shape[-1], aligned=False)
    keep = torch.tensor([True, False, True])
    X, plans = otm.mix(Y, torch.ones(3) / 3, keep)
    assert torch.equal(plans[1].argmax(0), perm)  # the hidden modality is still matched
    X.sum().backward()
    assert Y.grad[1].abs().max() == 0 and Y.grad[0].abs().max() > 0


def test_unaligned_reconstruction_goes_through_the_plans_where_row_pairing_cannot():
    """On a batch with one modality's rows shuffled, the row-paired (aligned) mode keeps a high
    reconstruction error whatever its decoders learn; the plan-based mode brings it down."""
    z, perm = codes(n=32, seed=2)
    out = output(shuffled(z, perm))
    batch = _Batch(torch.ones(32, 3, dtype=torch.bool))
    lambdas = torch.ones(3) / 3
    final = {}
    for aligned in (True, False):
        torch.manual_seed(0)
        otm = OTM(3, z.shape[-1], aligned=aligned).eval()  # eval: every modality visible
        opt = torch.optim.Adam(otm.decoders.parameters(), lr=1e-2)
        for _ in range(60):
            opt.zero_grad()
            otm(out, batch, lambdas).loss.backward()
            opt.step()
        final[aligned] = otm(out, batch, lambdas).metrics["reconstruction"]
    print(f"reconstruction after 60 decoder steps: aligned {final[True]:.3f}, unaligned {final[False]:.3f}")
    assert final[False] < 0.5 * final[True]


def test_unaligned_mode_on_paired_rows_finds_the_identity_and_matches_the_aligned_loss():
    z, _ = codes(seed=3)
    out = output(z)
    batch = _Batch(torch.ones(24, 3, dtype=torch.bool))
    lambdas = torch.tensor([0.2, 0.5, 0.3])
    torch.manual_seed(0)
    aligned = OTM(3, z.shape[-1]).eval()
    unaligned = OTM(3, z.shape[-1], aligned=False).eval()
    unaligned.load_state_dict(aligned.state_dict())
    _, plans = unaligned.mix(z.transpose(0, 1), lambdas, torch.ones(3, dtype=torch.bool))
    assert all(torch.equal(p.argmax(0), torch.arange(24)) for p in plans)
    a, u = aligned(out, batch, lambdas), unaligned(out, batch, lambdas)
    assert abs(a.metrics["reconstruction"] - u.metrics["reconstruction"]) < 0.05


def test_the_config_selects_the_unaligned_mode():
    from structalign_ros.core.config import ObjectiveConfig
    from structalign_ros.core.learn.objectives import build_objective

    kinds = {"a": "imu", "b": "wrench"}
    assert build_objective(ObjectiveConfig(name="otm"), kinds, 8).aligned
    assert not build_objective(ObjectiveConfig(name="otm", otm_aligned=False), kinds, 8).aligned
