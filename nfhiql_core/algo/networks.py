"""Building blocks shared by the value function, the goal representation and the policies."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


class MLP(nn.Module):
    """Linear → activation → (LayerNorm) on every hidden layer; the last layer is linear unless
    `activate_final`. Weights use Glorot-uniform init (variance scaling 1, fan_avg)."""

    def __init__(self, in_dim: int, dims: Sequence[int], layer_norm: bool = True,
                 activation: type[nn.Module] = nn.GELU, activate_final: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        for i, out_dim in enumerate(dims):
            linear = nn.Linear(in_dim, out_dim)
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
            layers.append(linear)
            if i < len(dims) - 1 or activate_final:
                layers.append(activation())
                if layer_norm:
                    layers.append(nn.LayerNorm(out_dim))
            in_dim = out_dim
        self.layers = nn.Sequential(*layers)
        self.output_layer = [m for m in layers if isinstance(m, nn.Linear)][-1]
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, last = self.layers
        for layer in hidden:
            x = layer(x)
        if last is self.output_layer:
            return full_precision(last, x)
        return last(x)


class EnsembleMLP(nn.Module):
    """`num_heads` independent MLPs evaluated in one batched matmul per layer.

    Input (B, in_dim) → output (num_heads, B, out). Hidden layers: Linear → GELU → LayerNorm;
    `gelu_approximate` is torch's GELU `approximate` ("tanh": flax's default GELU).
    """

    def __init__(self, num_heads: int, in_dim: int, dims: Sequence[int], layer_norm: bool = True,
                 gelu_approximate: str = "none"):
        super().__init__()
        self.num_heads = num_heads
        self.layer_norm = layer_norm
        self.gelu_approximate = gelu_approximate
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norm_weights = nn.ParameterList()
        self.norm_biases = nn.ParameterList()
        for i, out_dim in enumerate(dims):
            bound = math.sqrt(6.0 / (in_dim + out_dim))
            self.weights.append(nn.Parameter(torch.empty(num_heads, in_dim, out_dim).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.zeros(num_heads, 1, out_dim)))
            if i < len(dims) - 1 and layer_norm:
                self.norm_weights.append(nn.Parameter(torch.ones(num_heads, 1, out_dim)))
                self.norm_biases.append(nn.Parameter(torch.zeros(num_heads, 1, out_dim)))
            in_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(0).expand(self.num_heads, *x.shape)
        *hidden, (w_out, b_out) = zip(self.weights, self.biases)
        for i, (w, b) in enumerate(hidden):
            h = F.gelu(torch.baddbmm(b, h, w), approximate=self.gelu_approximate)
            if self.layer_norm:
                h = F.layer_norm(h, h.shape[-1:]) * self.norm_weights[i] + self.norm_biases[i]
        return full_precision(lambda v: torch.baddbmm(b_out, v, w_out), h)


def full_precision(layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Run `layer` in float32 even inside a bfloat16 autocast region.

    Output layers stay in float32 so values, log-scales and shifts keep their precision when the
    hidden layers run in bfloat16 (`AgentConfig.compute_dtype`).
    """
    if not torch.is_autocast_enabled(x.device.type):
        return layer(x)
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())


def length_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Scale each row to norm √dim."""
    return x / (x.norm(dim=-1, keepdim=True) + eps) * math.sqrt(x.shape[-1])


class GoalRepresentation(nn.Module):
    """φ([s; g]) — an MLP with LayerNorm whose output is length-normalised to norm √rep_dim."""

    def __init__(self, obs_dim: int, goal_dim: int, hidden_dims: Sequence[int], rep_dim: int,
                 layer_norm: bool = True):
        super().__init__()
        self.rep_dim = rep_dim
        self.net = MLP(obs_dim + goal_dim, (*hidden_dims, rep_dim), layer_norm=layer_norm)

    def forward(self, observations: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
        return length_normalize(self.net(torch.cat([observations, goals], dim=-1)))


class GoalConditionedValue(nn.Module):
    """V_i(s, g) = MLP_i([s, φ(s, g)]) for an ensemble of heads; φ is passed in, computed once."""

    def __init__(self, obs_dim: int, rep_dim: int, hidden_dims: Sequence[int], num_heads: int,
                 layer_norm: bool = True):
        super().__init__()
        self.net = EnsembleMLP(num_heads, obs_dim + rep_dim, (*hidden_dims, 1), layer_norm=layer_norm)

    def forward(self, observations: torch.Tensor, goal_reps: torch.Tensor) -> torch.Tensor:
        """Returns (num_heads, B)."""
        return self.net(torch.cat([observations, goal_reps], dim=-1)).squeeze(-1)
