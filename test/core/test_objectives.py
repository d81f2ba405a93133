"""Mathematical properties of the objectives, gradients, and that short training helps."""

import pytest
import torch
import torch.nn.functional as F

from structalign_ros.core.config import OBJECTIVES, ModelConfig, ObjectiveConfig, TrainConfig
from structalign_ros.core.data.batch import ModalitySpec
from structalign_ros.core.eval.metrics import linear_probe_accuracy, recall_at_k
from structalign_ros.core.eval.synthetic import SyntheticWorld
from structalign_ros.core.learn.kernels import InputKernels, rbf_kernel
from structalign_ros.core.learn.models import ModelOutput, MultimodalModel
from structalign_ros.core.learn.objectives import (
    BUILDERS,
    GOTMA,
    GRAM,
    MOVER,
    OTM,
    Objective,
    PairwiseInfoNCE,
    Symile,
    UniOMA,
    build_objective,
    pose_loss,
)
from structalign_ros.core.learn.objectives.gram import masked_vectors
from structalign_ros.core.learn.objectives.symile import multilinear_inner_product
from structalign_ros.core.learn.train import make_optimizer, seed_everything, train_step

TINY = ModelConfig(embed_dim=16, width=8, image_size=16)
BASE = [PairwiseInfoNCE(temperature=0.1), Symile(temperature=0.1), GRAM(temperature=0.1)]
IDS = ["pairwise", "symile", "gram"]


def outputs(z: torch.Tensor) -> ModelOutput:
    b = z.shape[0]
    m = z.shape[1]
    return ModelOutput(z, z.mean(1), torch.ones(b, m) / m, torch.zeros(b, 9), torch.zeros(b, m, 13))


class _Masked:
    def __init__(self, mask):
        self.mask = mask


def aligned(b=32, m=3, d=8, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, 1, d, generator=g)
    return F.normalize(base + noise * torch.randn(b, m, d, generator=g), dim=-1)


def test_multilinear_inner_product_of_two_is_the_dot_product():
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    assert torch.allclose(multilinear_inner_product(a, b), (a * b).sum(-1))
    c = torch.randn(5, 7)
    assert torch.allclose(multilinear_inner_product(a, b, c), torch.einsum("nd,nd,nd->n", a, b, c))


def test_symile_with_two_modalities_equals_pairwise_infonce():
    z = aligned(m=2, noise=0.5)
    mask = _Masked(torch.ones(32, 2, dtype=torch.bool))
    sym = Symile(temperature=0.2)(outputs(z), mask, torch.ones(2) / 2).loss
    pair = PairwiseInfoNCE(temperature=0.2)(outputs(z), mask, torch.ones(2) / 2).loss
    assert torch.isclose(sym, pair, atol=1e-5)


def test_volume_of_two_with_a_missing_third_is_sin_theta():
    from structalign_ros.core.ot.volume import gram_volume

    theta = torch.tensor([0.0, 0.3, 1.0, 1.5707963])
    a = torch.stack([torch.ones_like(theta), torch.zeros_like(theta), torch.zeros_like(theta)], -1)
    b = torch.stack([torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)], -1)
    third = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    z = torch.stack([a, third, b], 1)  # (4, 3, 3), the middle modality missing
    mask = torch.tensor([[True, False, True]]).expand(4, 3)
    assert torch.allclose(gram_volume(masked_vectors(z, mask)), torch.sin(theta), atol=1e-5)
    assert gram_volume(masked_vectors(z, torch.ones(4, 3, dtype=torch.bool)))[0] < 1e-5


@pytest.mark.parametrize("objective", BASE, ids=IDS)
def test_aligned_embeddings_score_better_than_shuffled(objective):
    z = aligned()
    if isinstance(objective, Symile):
        # Symile's notion of a matched triple: the third is the elementwise product of the other two
        z[:, 2] = F.normalize(z[:, 0] * F.normalize(torch.randn(32, 8), dim=-1), dim=-1)
        z[:, 1] = F.normalize(z[:, 2] / z[:, 0], dim=-1)
    shuffled = z.clone()
    # every modality but the first gets its own permutation: no two members of a window stay paired
    # (a volume is already small when any two of its vectors are collinear)
    shuffled[:, 1] = z[torch.randperm(32), 1]
    shuffled[:, 2] = z[torch.randperm(32), 2]
    mask = _Masked(torch.ones(32, 3, dtype=torch.bool))
    lam = torch.ones(3) / 3
    assert objective(outputs(z), mask, lam).loss < objective(outputs(shuffled), mask, lam).loss - 0.5


@pytest.mark.parametrize("objective", BASE, ids=IDS)
def test_masked_entries_do_not_affect_the_loss(objective):
    z = aligned(m=3, noise=0.5)
    mask = torch.ones(32, 3, dtype=torch.bool)
    mask[::3, 2] = False
    mask[1::5, 0] = False
    other = z.clone()
    other[~mask] = F.normalize(torch.randn(int((~mask).sum()), 8), dim=-1)
    lam = torch.ones(3) / 3
    a = objective(outputs(z), _Masked(mask), lam).loss
    b = objective(outputs(other), _Masked(mask), lam).loss
    assert torch.isclose(a, b, atol=1e-6)
    assert torch.isfinite(a)


def test_pose_loss_is_lowest_at_the_truth_and_ignores_missing_experts():
    from structalign_ros.core.learn.rotations import matrix_to_rotation_6d, quaternion_to_matrix

    q = F.normalize(torch.randn(4, 4), dim=1)
    target = torch.cat([torch.randn(4, 3), q], 1)
    loc, scale = torch.zeros(3), torch.full((3,), 0.5)
    r6 = matrix_to_rotation_6d(quaternion_to_matrix(q))
    log_var = torch.full((4, 3), -4.0)
    exact = torch.cat([target[:, :3] / scale, log_var, r6, torch.full((4, 1), -4.0)], 1)  # (4, 13)
    experts = torch.stack([exact, exact], 1)  # two experts, both right
    fused = torch.cat([target[:, :3], r6], 1)
    mask = torch.ones(4, 2, dtype=torch.bool)
    loss, metrics = pose_loss(experts, fused, target, mask, loc, scale)
    assert metrics["pose_pos_mm"] < 1e-3 and metrics["pose_rot_deg"] < 0.5
    moved, turned = experts.clone(), experts.clone()
    moved[:, 1, :3] += 0.1
    turned[:, 1, 6:12] = matrix_to_rotation_6d(quaternion_to_matrix(F.normalize(torch.randn(4, 4), dim=1)))
    assert pose_loss(moved, fused, target, mask, loc, scale)[0] > loss + 0.1
    assert pose_loss(turned, fused, target, mask, loc, scale)[0] > loss + 0.1
    # a missing expert's output does not count, however wrong
    only_first = mask.clone()
    only_first[:, 1] = False
    assert torch.isclose(pose_loss(turned, fused, target, only_first, loc, scale)[0], loss)


def test_build_objective_configures_each_method():
    kinds = {"rgb": "image", "imu": "imu"}
    assert isinstance(build_objective(ObjectiveConfig(name="symile"), kinds, 16), Symile)
    uni = build_objective(ObjectiveConfig(name="unioma", base="gram"), kinds, 16)
    assert isinstance(uni, UniOMA) and isinstance(uni.base, GRAM)
    otm = build_objective(ObjectiveConfig(name="otm"), kinds, 16)
    assert isinstance(otm, OTM) and len(otm.decoders) == 2


def test_every_configurable_objective_has_exactly_one_builder():
    assert set(BUILDERS) == set(OBJECTIVES)
    kinds = {"rgb": "image", "imu": "imu"}
    for name in OBJECTIVES:
        cfg = ObjectiveConfig(name=name, temperature=0.3)
        objective = build_objective(cfg, kinds, 16)
        assert isinstance(objective, Objective)
        contrastive = getattr(objective, "base", getattr(objective, "contrastive", objective))
        if hasattr(contrastive, "temperature"):
            assert contrastive.temperature == 0.3, name  # the config's value reached the method


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(image=16, steps=12)


@pytest.mark.parametrize("objective", BASE, ids=IDS)
def test_gradients_reach_every_encoder(world, objective):
    # lambda is not among them: the base objectives ignore it, and the pose experts are trained one by
    # one (UniOMA's lambda gradient is checked in test_unioma)
    batch, _ = world.batch(16, seed=0, drop=0.2)
    model = MultimodalModel(ModalitySpec.from_batch(batch, world.kinds), TINY)
    out = model(batch.inputs, batch.mask)
    from structalign_ros.core.learn.train import supervised_pose_loss

    loss = objective(out, batch, model.lambdas).loss + supervised_pose_loss(model.pose_head, out, batch)[0]
    loss.backward()
    for name, enc in model.encoders.items():
        grads = [p.grad for p in enc.parameters() if p.requires_grad]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, name


@pytest.mark.slow
@pytest.mark.parametrize("name", [*IDS, "mover", "gotma", "otm"])
def test_short_training_lowers_the_loss_and_improves_a_linear_probe(name):
    # 16 close classes: random encoders do not already separate them (the probe is not at ceiling)
    world = SyntheticWorld(classes=16, spread=1.0, image=16, steps=12)
    seed_everything(0)
    train, _ = world.batch(64, seed=1, drop=0.1, noise=0.5)
    probe_tr, y_tr = world.batch(128, seed=2, noise=0.5)
    probe_te, y_te = world.batch(128, seed=3, noise=0.5)
    model = MultimodalModel(ModalitySpec.from_batch(train, world.kinds), TINY)
    model.fit_input_stats(train)
    # alpha = 0.2 weights MOVER's volume term (matched by OT on still-random embeddings) below its
    # contrastive term; the other objectives here do not use alpha
    objective = build_objective(
        ObjectiveConfig(name=name, temperature=0.2, alpha=0.2), world.kinds, TINY.embed_dim
    )

    def probe() -> float:
        """Mean over modalities of the linear-probe accuracy of that modality's embedding."""
        with torch.no_grad():
            a, b = model.eval()(probe_tr.inputs, probe_tr.mask), model(probe_te.inputs, probe_te.mask)
        accs = [linear_probe_accuracy(a.embeddings[:, m], y_tr, b.embeddings[:, m], y_te) for m in range(6)]
        return sum(accs) / len(accs)

    before = probe()
    opt = make_optimizer(model, objective, TrainConfig(lr=3e-3))
    batches = [world.batch(64, seed=10 + s, drop=0.1, noise=0.5)[0] for s in range(40)]
    losses = [train_step(model, b, opt, objective)["loss"] for b in batches]
    after = probe()
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    assert after > before + 0.05, (before, after)


def test_recall_at_k_counts_the_paired_item():
    x = torch.eye(4)
    assert recall_at_k(x, x, k=1) == 1.0
    assert recall_at_k(x, x[[1, 0, 2, 3]], k=1) == 0.5


def unioma(world, alpha=1.0, lambda_entropy=0.01):
    kernels = InputKernels(world.kinds, image_size=8, members=10, max_clusters=4)
    return UniOMA(PairwiseInfoNCE(temperature=0.2), kernels, alpha=alpha, lambda_entropy=lambda_entropy)


def test_unioma_terms_match_pot_and_reach_lambda_and_every_encoder(world):
    import ot

    batch, _ = world.batch(24, seed=0)
    model = MultimodalModel(ModalitySpec.from_batch(batch, world.kinds), TINY)
    model.fit_input_stats(batch)
    objective = unioma(world)
    out = model(batch.inputs, batch.mask)
    d, consensus = objective.structure(out, batch, model.lambdas)
    assert d.shape == (6,) and consensus.shape == (24, 24)
    # the oracle: POT's exact square-loss GW from the same start, on the same matrices
    Kz = rbf_kernel(out.embeddings.detach().transpose(0, 1))
    C = consensus.detach().double().numpy()
    start = torch.eye(24, dtype=torch.float64).numpy() / 24
    ref = [ot.gromov.gromov_wasserstein2(C, k.double().numpy(), loss_fun="square_loss", G0=start) for k in Kz]
    assert torch.allclose(d.detach().double(), torch.tensor(ref), rtol=0.05, atol=1e-3)

    objective(out, batch, model.lambdas).loss.backward()
    assert model.modality_logits.grad is not None and model.modality_logits.grad.abs().sum() > 0
    for name, enc in model.encoders.items():
        assert sum(p.grad.abs().sum() for p in enc.parameters()) > 0, name


def test_unioma_without_enough_complete_windows_is_the_base_objective(world):
    batch, _ = world.batch(16, seed=1)
    batch.mask[::2, 1] = False
    batch.mask[1::2, 2] = False  # no window has every modality
    model = MultimodalModel(ModalitySpec.from_batch(batch, world.kinds), TINY)
    out = model(batch.inputs, batch.mask)
    objective = unioma(world, lambda_entropy=0.0)
    result = objective(out, batch, model.lambdas)
    assert "gw" not in result.metrics
    assert torch.isclose(result.loss, objective.base(out, batch, model.lambdas).loss)


def test_entropy_prior_keeps_lambda_off_the_vertex():
    # lambda alone against fixed GW terms: without the prior it collapses, with it it is a softmax
    d = torch.tensor([0.05, 0.02, 0.08])
    finals = {}
    for beta in (0.0, 0.01):
        logits = torch.zeros(3, requires_grad=True)
        opt = torch.optim.SGD([logits], lr=50.0)
        for _ in range(600):
            lam = torch.softmax(logits, 0)
            loss = (lam * d).sum() + beta * (lam * lam.log()).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        finals[beta] = torch.softmax(logits, 0).detach()
    assert finals[0.0][1] > 0.99
    assert torch.allclose(finals[0.01], torch.softmax(-d / 0.01, 0), atol=1e-3)


@pytest.mark.slow
def test_a_corrupted_modality_loses_weight_against_a_clean_run(world):
    imu = world.modalities.index("imu")

    def final_lambdas(corrupt):
        seed_everything(0)
        first, _ = world.batch(32, seed=0, corrupt=corrupt)
        model = MultimodalModel(ModalitySpec.from_batch(first, world.kinds), TINY)
        model.fit_input_stats(first)
        objective = unioma(world)
        opt = make_optimizer(model, objective, TrainConfig(lr=3e-3))
        for s in range(30):
            train_step(model, world.batch(32, seed=10 + s, corrupt=corrupt)[0], opt, objective)
        return model.lambdas.detach()

    clean, corrupted = final_lambdas(None), final_lambdas("imu")
    print(f"lambda clean {clean.tolist()}\nlambda imu corrupted {corrupted.tolist()}")
    assert corrupted[imu] < clean[imu] - 0.003
    assert corrupted[imu] == corrupted.min()


def test_mover_matching_recovers_a_shuffled_pairing_and_prefers_aligned_groups():
    z = aligned(b=24, m=3, noise=0.05)
    perm1, perm2 = torch.randperm(24), torch.randperm(24)
    shuffled = z.clone()
    shuffled[:, 1], shuffled[:, 2] = z[perm1, 1], z[perm2, 2]
    mask = torch.ones(24, 3, dtype=torch.bool)
    mover = MOVER(temperature=0.1, epsilon=0.01)
    index, _ = mover.match(shuffled, mask)
    # window i's modality-1 embedding now sits at row inv(perm1)[i]
    assert torch.equal(index[:, 1], torch.argsort(perm1)) and torch.equal(index[:, 2], torch.argsort(perm2))
    assert torch.equal(index[:, 0], torch.arange(24))
    lam = torch.ones(3) / 3
    aligned_loss = mover(outputs(z), _Masked(mask), lam)
    random = F.normalize(torch.randn(24, 3, 8), dim=-1)
    random_loss = mover(outputs(random), _Masked(mask), lam)
    assert aligned_loss.metrics["volume"] < 0.2 * random_loss.metrics["volume"]
    assert aligned_loss.loss < random_loss.loss
    assert aligned_loss.metrics["match_rate"] == 1.0


def test_mover_ignores_masked_entries():
    z = aligned(b=24, m=3, noise=0.3)
    mask = torch.ones(24, 3, dtype=torch.bool)
    mask[::4, 2] = False
    other = z.clone()
    other[~mask] = F.normalize(torch.randn(int((~mask).sum()), 8), dim=-1)
    lam = torch.ones(3) / 3
    a = MOVER()(outputs(z), _Masked(mask), lam).loss
    b = MOVER()(outputs(other), _Masked(mask), lam).loss
    assert torch.isfinite(a) and torch.isclose(a, b, atol=1e-5)


def test_gotma_geometry_terms_vanish_for_isometric_views_and_grow_otherwise():
    g = torch.Generator().manual_seed(0)
    base = F.normalize(torch.randn(24, 8, generator=g), dim=-1)
    rotation = torch.linalg.qr(torch.randn(8, 8, generator=g))[0]
    mask = _Masked(torch.ones(24, 2, dtype=torch.bool))
    gotma = GOTMA(alpha=1.0, k=4)
    iso = gotma(outputs(torch.stack([base, base @ rotation], 1)), mask, torch.ones(2) / 2).metrics
    other = F.normalize(torch.randn(24, 8, generator=g), dim=-1)
    far = gotma(outputs(torch.stack([base, other], 1)), mask, torch.ones(2) / 2).metrics
    # the entropic plan is blurred, so even isometric views keep a small GW value
    print(f"gotma gw isometric {iso['gw']:.4f}, unrelated {far['gw']:.4f}")
    assert iso["riemannian"] < 1e-8 and far["riemannian"] > 0.05
    assert far["gw"] > 2 * iso["gw"]


def test_geodesic_distances_follow_the_manifold_and_metrics_compare_views():
    from structalign_ros.core.eval.metrics import gw_manifold_discrepancy, neighbourhood_preservation
    from structalign_ros.core.learn.kernels import knn_geodesic_distances

    t = torch.linspace(0, 3, 40)
    arc = torch.stack([torch.cos(t), torch.sin(t)], 1)
    D = knn_geodesic_distances(arc, 2)
    assert torch.isclose(D[0, -1] / D[0, 1], torch.tensor(39.0), rtol=1e-3)  # arc length, not the chord
    assert torch.allclose(D, D.T) and torch.equal(D.diagonal(), torch.zeros(40))
    z = torch.randn(50, 8)
    rotated = z @ torch.linalg.qr(torch.randn(8, 8))[0]
    assert neighbourhood_preservation(z, rotated) == 1.0
    assert neighbourhood_preservation(z, torch.randn(50, 8)) < 0.5
    assert gw_manifold_discrepancy(z, rotated) < 1e-6 < gw_manifold_discrepancy(z, torch.randn(50, 8))


def test_otm_reconstructs_hidden_modalities_and_trains_its_decoders(world):
    batch, _ = world.batch(24, seed=0)
    model = MultimodalModel(ModalitySpec.from_batch(batch, world.kinds), TINY)
    model.fit_input_stats(batch)
    torch.manual_seed(1)
    otm = OTM(6, TINY.embed_dim, hide=0.5)
    out = model(batch.inputs, batch.mask)
    result = otm(out, batch, model.lambdas)
    assert "reconstruction" in result.metrics and "reconstruction_hidden" in result.metrics
    result.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in otm.decoders.parameters())
    assert model.modality_logits.grad.abs().sum() > 0  # lambda reaches the loss through the mix
    # a few decoder steps on fixed embeddings lower the reconstruction error of the full mix
    otm.eval()
    opt = torch.optim.Adam(otm.decoders.parameters(), lr=1e-2)
    detached = ModelOutput(*(t.detach() for t in out))
    first = otm(detached, batch, model.lambdas.detach()).metrics["reconstruction"]
    for _ in range(30):
        opt.zero_grad()
        otm(detached, batch, model.lambdas.detach()).loss.backward()
        opt.step()
    assert otm(detached, batch, model.lambdas.detach()).metrics["reconstruction"] < 0.5 * first
