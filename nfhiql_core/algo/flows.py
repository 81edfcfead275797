"""Conditional RealNVP: affine couplings with learned PLU mixing, conditioned on a context vector.

The flow is a map x = g(z; c) from a standard-normal base z to the data x. Each block applies
an affine coupling and then an invertible linear mixing W = P·L·(U + diag(d)):

    sampling   (z -> x):  h2 = u2·exp(s(u1, c)) + t(u1, c);  y = W·h           (plain matmuls: exports to ONNX)
    density    (x -> z):  h = W⁻¹·y (W⁻¹ by triangular solves);  u2 = (h2 − t)·exp(−s)

log p(x | c) = log N(z; 0, I) − Σ_blocks (Σ s + Σ log|d|). Log-scales are bounded with
`max_log_scale · tanh(raw / max_log_scale)` so exp() cannot overflow. By default the coupling nets
have LayerNorm and their last layer starts at zero, so every coupling of a fresh flow is the identity
and the flow a pure rotation of the base (log-det 0).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from nfhiql_core.algo.networks import MLP


class PLULinear(nn.Module):
    """Parameters of an invertible linear map W = P·L·(U + diag(d)) with a fixed permutation P.

    L is unit lower-triangular, U strictly upper-triangular; log|det W| = Σ log|d|.
    Initialised from a random orthogonal matrix (seeded by the caller's torch RNG). A flow builds
    all its blocks' matrices at once with `plu_matrices`.
    """

    def __init__(self, dim: int):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(dim, dim))
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("lower_mask", torch.tril(torch.ones(dim, dim), -1))
        self.register_buffer("eye", torch.eye(dim))
        self.register_buffer("diag_sign", torch.sign(diag))
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_abs_diag = nn.Parameter(torch.log(torch.abs(diag)))


def plu_matrices(mixings: Sequence[PLULinear], inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_k or W_k⁻¹ stacked as (K, dim, dim), Σ_k log|det W_k|) for K same-sized `mixings`.

    One batched pass for all K: the per-block factor algebra and triangular solves would otherwise be
    repeated K times per call, and in training each call is forward and backward. W⁻¹ = U⁻¹·L⁻¹·Pᵀ
    comes from two batched triangular solves against Pᵀ, so the density direction applies each block
    as one matmul.
    """
    first = mixings[0]
    log_abs_diag = torch.stack([m.log_abs_diag for m in mixings])
    lower = torch.stack([m.lower for m in mixings]) * first.lower_mask + first.eye
    diag = torch.stack([m.diag_sign for m in mixings]) * torch.exp(log_abs_diag)
    upper = torch.triu(torch.stack([m.upper for m in mixings]), 1) + first.eye * diag.unsqueeze(-2)
    perm = torch.stack([m.perm for m in mixings])
    if inverse:
        v = torch.linalg.solve_triangular(lower, perm.transpose(-1, -2), upper=False, unitriangular=True)
        matrices = torch.linalg.solve_triangular(upper, v, upper=True)
    else:
        matrices = perm @ lower @ upper
    return matrices, log_abs_diag.sum()


class AffineCoupling(nn.Module):
    """Affine coupling: the second part is scaled and shifted by a net of (first part, context)."""

    def __init__(self, dim: int, context_dim: int, hidden_dims: Sequence[int], max_log_scale: float,
                 layer_norm: bool = True, zero_init: bool = True):
        super().__init__()
        self.split = math.ceil(dim / 2) if dim > 1 else 0
        self.max_log_scale = max_log_scale
        out = dim - self.split
        self.net = MLP(self.split + context_dim, (*hidden_dims, 2 * out), layer_norm=layer_norm,
                       activation=nn.LeakyReLU)
        if zero_init:  # the coupling starts as the identity
            nn.init.zeros_(self.net.output_layer.weight)
            nn.init.zeros_(self.net.output_layer.bias)

    def _scale_shift(self, keep: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_s, t = self.net(torch.cat([keep, context], dim=-1)).chunk(2, dim=-1)
        s = self.max_log_scale * torch.tanh(raw_s / self.max_log_scale)
        return s, t

    def forward(self, u: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampling direction; returns (h, Σ s) with Σ s = log|det ∂h/∂u| per sample."""
        keep, change = u[:, : self.split], u[:, self.split:]
        s, t = self._scale_shift(keep, context)
        return torch.cat([keep, change * torch.exp(s) + t], dim=-1), s.sum(-1)

    def inverse(self, h: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density direction; returns (u, Σ s)."""
        keep, changed = h[:, : self.split], h[:, self.split:]
        s, t = self._scale_shift(keep, context)
        return torch.cat([keep, (changed - t) * torch.exp(-s)], dim=-1), s.sum(-1)


class ConditionalRealNVP(nn.Module):
    """A stack of (affine coupling → PLU mixing) blocks over `dim`-vectors, conditioned on `context`."""

    def __init__(self, dim: int, context_dim: int, num_blocks: int = 4,
                 hidden_dims: Sequence[int] = (256, 256), max_log_scale: float = 3.0,
                 layer_norm: bool = True, zero_init: bool = True):
        super().__init__()
        self.dim = dim
        self.couplings = nn.ModuleList(
            AffineCoupling(dim, context_dim, hidden_dims, max_log_scale, layer_norm, zero_init)
            for _ in range(num_blocks))
        self.mixings = nn.ModuleList(PLULinear(dim) for _ in range(num_blocks))

    def sample_with_log_prob(self, context: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = g(z; context) and the exact log p(x | context); z = 0 gives a deterministic, mode-like x."""
        weights, mixing_log_det = plu_matrices(self.mixings)
        log_det = mixing_log_det
        x = z
        for coupling, weight in zip(self.couplings, weights):
            x, s_sum = coupling(x, context)
            x = x @ weight.T
            log_det = log_det + s_sum
        return x, standard_normal_log_prob(z) - log_det

    def inverse(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = g⁻¹(x; context) and log|det ∂z/∂x| per sample."""
        inverses, mixing_log_det = plu_matrices(self.mixings, inverse=True)
        log_det = -mixing_log_det
        z = x
        for coupling, weight_inverse in zip(reversed(self.couplings), inverses.flip(0)):
            z, s_sum = coupling.inverse(z @ weight_inverse.T, context)
            log_det = log_det - s_sum
        return z, log_det

    def log_prob(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Exact log p(x | context) per sample."""
        z, log_det = self.inverse(x, context)
        return standard_normal_log_prob(z) + log_det


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """Σ log N(z_i; 0, 1) over the last dimension."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))
