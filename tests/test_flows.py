"""Conditional RealNVP: exact invertibility, exact log-determinants, and multimodal fits."""
import math

import pytest
import torch
from torch import nn

from nfhiql_core.algo.flows import ConditionalRealNVP, PLULinear, plu_matrices, standard_normal_log_prob
from nfhiql_core.algo.policies import FlowPolicy, GaussianPolicy


def perturbed_flow(dim: int, context_dim: int, seed: int, scale: float = 0.05) -> ConditionalRealNVP:
    """A flow whose couplings are far from the identity init (zero-initialised last layers)."""
    torch.manual_seed(seed)
    flow = ConditionalRealNVP(dim, context_dim, num_blocks=4, hidden_dims=(32, 32))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


@pytest.mark.parametrize("dim", [1, 2, 5, 10])
def test_round_trip_is_exact_in_float32(dim):
    flow = perturbed_flow(dim, context_dim=6, seed=dim)
    context, z = torch.randn(512, 6), torch.randn(512, dim)
    x = flow.sample_with_log_prob(context, z)[0]
    z_back, _ = flow.inverse(x, context)
    assert (z_back - z).abs().max().item() <= 1e-5
    x_again = flow.sample_with_log_prob(context, z_back)[0]
    assert (x_again - x).abs().max().item() <= 1e-5


@pytest.mark.parametrize("dim", [2, 3, 7])
def test_log_det_matches_autograd_jacobian(dim):
    flow = perturbed_flow(dim, context_dim=4, seed=10 + dim, scale=0.1).double()
    for i in range(3):
        context = torch.randn(1, 4, dtype=torch.float64)
        z = torch.randn(1, dim, dtype=torch.float64)
        def sample(v: torch.Tensor) -> torch.Tensor:
            return flow.sample_with_log_prob(context, v.unsqueeze(0))[0][0]
        jac = torch.autograd.functional.jacobian(sample, z[0])
        _, expected_log_det = torch.linalg.slogdet(jac)
        x, log_prob = flow.sample_with_log_prob(context, z)
        # log p(x) = log N(z) − log|det ∂x/∂z|
        assert abs((standard_normal_log_prob(z) - log_prob).item() - expected_log_det.item()) <= 1e-4
        # the density direction agrees with the sampling direction
        assert abs(flow.log_prob(x, context).item() - log_prob.item()) <= 1e-4


def test_log_prob_is_a_normalised_density_in_2d():
    flow = perturbed_flow(2, context_dim=1, seed=3, scale=0.1)
    grid = torch.linspace(-8, 8, 401)
    xs = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        density = flow.log_prob(xs, torch.zeros(len(xs), 1)).exp()
    mass = density.sum().item() * (grid[1] - grid[0]).item() ** 2
    assert mass == pytest.approx(1.0, abs=0.02)


def test_plu_matrices_invert_each_other_and_give_the_log_det():
    torch.manual_seed(0)
    layers = [PLULinear(6) for _ in range(3)]
    with torch.no_grad():
        for layer in layers:
            layer.lower.add_(0.3 * torch.randn(6, 6))  # the upper triangle must be masked out
            layer.log_abs_diag.add_(0.3 * torch.randn(6))
    weights, log_det = plu_matrices(layers)
    inverses, inverse_log_det = plu_matrices(layers, inverse=True)
    assert weights.shape == inverses.shape == (3, 6, 6)
    for layer, weight, inverse in zip(layers, weights, inverses):
        assert torch.equal(plu_matrices([layer])[0][0], weight)
        assert torch.allclose(weight @ inverse, torch.eye(6), atol=1e-5)
        lower = torch.tril(layer.lower, -1) + torch.eye(6)
        upper = torch.triu(layer.upper, 1) + torch.diag(layer.diag_sign * layer.log_abs_diag.exp())
        assert torch.allclose(weight, layer.perm @ lower @ upper, atol=1e-6)
    assert torch.equal(log_det, inverse_log_det)
    assert log_det.item() == pytest.approx(sum(torch.linalg.slogdet(w)[1].item() for w in weights), abs=1e-5)
    assert log_det.item() == pytest.approx(sum(layer.log_abs_diag.sum().item() for layer in layers), abs=1e-6)


def two_mode_samples(n: int, generator: torch.Generator) -> torch.Tensor:
    """Equal mixture of N((±2, 0), 0.3²·I)."""
    sign = torch.randint(0, 2, (n, 1), generator=generator) * 2.0 - 1.0
    return torch.cat([2.0 * sign, torch.zeros(n, 1)], dim=1) + 0.3 * torch.randn(n, 2, generator=generator)


def fit(policy: torch.nn.Module, steps: int = 600) -> torch.Tensor:
    """Maximum likelihood on the two-mode target; returns 4000 samples from the fitted policy."""
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    context = torch.zeros(256, 1)
    for _ in range(steps):
        loss = -policy.log_prob(two_mode_samples(256, gen), context).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return policy.sample_with_log_prob(torch.zeros(4000, 1), torch.randn(4000, 2, generator=gen))[0]


def test_flow_fits_two_modes_where_the_gaussian_cannot():
    torch.manual_seed(0)
    flow_samples = fit(FlowPolicy(1, 2, hidden_dims=(32,), encode_dim=8, num_blocks=4,
                                  coupling_hidden_dims=(64, 64), max_log_scale=3.0))
    torch.manual_seed(0)
    gauss_samples = fit(GaussianPolicy(1, 2, hidden_dims=(32,), const_std=False))

    def mass_near(samples: torch.Tensor, x: float) -> float:
        return ((samples[:, 0] - x).abs() < 0.75).float().mean().item()

    for mode in (-2.0, 2.0):
        assert mass_near(flow_samples, mode) > 0.35
    assert mass_near(flow_samples, 0.0) < 0.15
    # The best single Gaussian puts its mean between the modes, where the data has no mass.
    assert mass_near(gauss_samples, 0.0) > 0.25
    assert min(mass_near(gauss_samples, -2.0), mass_near(gauss_samples, 2.0)) < 0.3


def test_zero_noise_is_deterministic_and_log_prob_finite():
    flow = perturbed_flow(3, context_dim=2, seed=5)
    context = torch.randn(8, 2)
    a, lp_a = flow.sample_with_log_prob(context, torch.zeros(8, 3))
    b, lp_b = flow.sample_with_log_prob(context, torch.zeros(8, 3))
    assert torch.equal(a, b) and torch.equal(lp_a, lp_b)
    assert torch.isfinite(lp_a).all()
    assert math.isfinite(flow.log_prob(a, context).sum().item())


@pytest.mark.parametrize("layer_norm", [True, False])
def test_zero_init_couplings_are_the_identity_and_the_fresh_flow_a_rotation(layer_norm):
    torch.manual_seed(0)
    flow = ConditionalRealNVP(5, 3, num_blocks=6, hidden_dims=(16,), layer_norm=layer_norm)
    assert any(isinstance(m, nn.LayerNorm) for m in flow.couplings.modules()) == layer_norm
    context, z = torch.randn(64, 3), torch.randn(64, 5)
    for coupling in flow.couplings:
        h, log_scale_sum = coupling(z, context)
        assert torch.equal(h, z) and torch.equal(log_scale_sum, torch.zeros(64))
    x, log_prob = flow.sample_with_log_prob(context, z)
    assert (standard_normal_log_prob(z) - log_prob).abs().max().item() <= 1e-5  # log-det 0
    rotation = torch.eye(5)
    for mixing in flow.mixings:  # what is left: the orthogonal PLU initialisations
        rotation = plu_matrices([mixing])[0][0] @ rotation
    assert torch.allclose(x, z @ rotation.T, atol=1e-5)
    assert torch.allclose(x.norm(dim=-1), z.norm(dim=-1), atol=1e-5)

    torch.manual_seed(0)
    random_init = ConditionalRealNVP(5, 3, num_blocks=6, hidden_dims=(16,), layer_norm=layer_norm, zero_init=False)
    h, log_scale_sum = random_init.couplings[0](z, context)
    assert not torch.allclose(h, z) and log_scale_sum.abs().min() > 0
