"""Conditional policies with one interface: log_prob(x, context) and sample(context, z).

`FlowPolicy` (NF-HIQL) encodes the context and runs a conditional RealNVP; `GaussianPolicy`
(plain HIQL, the ablation) is a diagonal Gaussian with the mean from an MLP. Both take the noise
z as an argument, so z = 0 is the deterministic policy used for evaluation and export.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nfhiql_core.algo.flows import ConditionalRealNVP, standard_normal_log_prob
from nfhiql_core.algo.networks import MLP


class GaussianPolicy(nn.Module):
    """N(μ(c), σ²) with σ = 1 (const_std, as OGBench's HIQL) or a learned state-independent σ."""

    def __init__(self, context_dim: int, dim: int, hidden_dims: Sequence[int], const_std: bool = True):
        super().__init__()
        self.dim = dim
        self.trunk = MLP(context_dim, hidden_dims, layer_norm=False, activate_final=True)
        self.mean = nn.Linear(self.trunk.out_dim, dim)
        nn.init.xavier_uniform_(self.mean.weight, gain=1e-2)
        nn.init.zeros_(self.mean.bias)
        if const_std:
            self.register_buffer("log_std", torch.zeros(dim))
        else:
            self.log_std = nn.Parameter(torch.zeros(dim))

    def log_prob(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """log N(x; μ(c), σ²) summed over dimensions."""
        z = (x - self.mean(self.trunk(context))) * torch.exp(-self.log_std)
        return standard_normal_log_prob(z) - self.log_std.sum()

    def sample_with_log_prob(self, context: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = μ(c) + σ·z and log p(x | c)."""
        x = self.mean(self.trunk(context)) + torch.exp(self.log_std) * z
        return x, standard_normal_log_prob(z) - self.log_std.sum()


class FlowPolicy(nn.Module):
    """Context encoder MLP (the conditioning network: `hidden_dims` with `activation` and LayerNorm,
    then a linear map to `encode_dim`) followed by a conditional RealNVP over the output."""

    def __init__(self, context_dim: int, dim: int, hidden_dims: Sequence[int], encode_dim: int,
                 num_blocks: int, coupling_hidden_dims: Sequence[int], max_log_scale: float,
                 activation: type[nn.Module] = nn.GELU, coupling_layer_norm: bool = True,
                 coupling_zero_init: bool = True):
        super().__init__()
        self.dim = dim
        self.encoder = MLP(context_dim, (*hidden_dims, encode_dim), layer_norm=True, activation=activation)
        self.flow = ConditionalRealNVP(dim, encode_dim, num_blocks, coupling_hidden_dims, max_log_scale,
                                       coupling_layer_norm, coupling_zero_init)

    def log_prob(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.flow.log_prob(x, self.encoder(context))

    def sample_with_log_prob(self, context: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow.sample_with_log_prob(self.encoder(context), z)
