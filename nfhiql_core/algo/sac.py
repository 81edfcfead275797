"""Soft actor-critic (SAC) as OGBench trains its locomotion experts (impls/agents/sac.py), in torch.

* Actor: tanh-squashed diagonal Gaussian, mean and state-dependent log-std heads on a GELU MLP,
  log-std clipped to [-5, 2]; the heads start small (variance scaling `actor_fc_scale`).
* Critic: an ensemble of two Q MLPs on [s, a] with a Polyak-averaged target; the TD target is
  r + γ·m·(min_i Q̄_i(s', a') − α·log π(a'|s')) with a' ~ π(·|s') (m = 0 at termination).
* Actor loss: mean(α·log π(a|s) − min_i Q_i(s, a)), a ~ π(·|s) reparameterised.
* Temperature: α = exp(log α), loss α·(H − H_target) with H = −mean(log π) (no gradient) and
  H_target = −`target_entropy_multiplier`·dim(A).

All three losses are computed from the parameters before the step; each trains only its own
parameters (critic, actor, log α) with one Adam step. As in OGBench, the target then moves
towards the critic as it was *before* that step. Choices OGBench's ant expert fixes are fixed
here: tanh squashing, state-dependent std, min over the ensemble, no layer norm.
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nfhiql_core.algo.networks import MLP, EnsembleMLP

LOG_STD_RANGE = (-5.0, 2.0)
NUM_CRITICS = 2
GELU = functools.partial(nn.GELU, approximate="tanh")  # flax's nn.gelu, which OGBench's MLPs use


@dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters; defaults are OGBench's (impls/agents/sac.py) for the ant expert."""

    lr: float = 1e-4  # Adam learning rate, all networks and log α
    batch_size: int = 256  # transitions per update
    actor_hidden_dims: tuple[int, ...] = (256, 256)  # actor MLP widths
    value_hidden_dims: tuple[int, ...] = (256, 256)  # each critic's MLP widths
    discount: float = 0.99  # γ
    tau: float = 0.005  # Polyak rate of the target critic
    target_entropy: float | None = None  # H_target; None: −target_entropy_multiplier·dim(A)
    target_entropy_multiplier: float = 0.5  # used when target_entropy is None
    actor_fc_scale: float = 0.01  # variance-scaling factor of the actor's mean and log-std heads

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or not 0 < self.tau <= 1 or not 0 <= self.discount <= 1:
            raise ValueError("need lr > 0, batch_size >= 1, 0 < tau <= 1 and 0 <= discount <= 1")
        if not self.actor_hidden_dims or not self.value_hidden_dims:
            raise ValueError("actor_hidden_dims and value_hidden_dims need at least one layer")


def _head(in_dim: int, out_dim: int, scale: float) -> nn.Linear:
    """Linear layer with variance-scaling (fan_avg, uniform) init of factor `scale`, zero bias."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.xavier_uniform_(layer.weight, gain=math.sqrt(scale))
    nn.init.zeros_(layer.bias)
    return layer


def tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """log |d tanh(u)/du| summed over the last axis, in the numerically stable form."""
    return (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)


def squashed_sample(mean: torch.Tensor, log_std: torch.Tensor,
                    noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised (tanh(u), log π) for u = mean + σ·noise; `noise` ~ N(0, I) is drawn when None."""
    noise = torch.randn_like(mean) if noise is None else noise
    u = mean + log_std.exp() * noise
    log_prob = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1) - tanh_log_det(u)
    return torch.tanh(u), log_prob


class TanhGaussianActor(nn.Module):
    """π(a|s) = tanh(N(μ(s), diag σ(s)^2)); `mode` is tanh(μ(s)) (OGBench's temperature 0)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dims: tuple[int, ...], fc_scale: float):
        super().__init__()
        self.trunk = MLP(obs_dim, hidden_dims, layer_norm=False, activation=GELU, activate_final=True)
        self.mean = _head(hidden_dims[-1], action_dim, fc_scale)
        self.log_std = _head(hidden_dims[-1], action_dim, fc_scale)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ) of the pre-tanh Gaussian."""
        h = self.trunk(obs)
        return self.mean(h), self.log_std(h).clamp(*LOG_STD_RANGE)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(obs)[0])

    def layers(self) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
        """The mean path as numpy (weight (out, in), bias) pairs: hidden layers, then the mean head."""
        def pair(layer: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
            return layer.weight.detach().cpu().numpy().copy(), layer.bias.detach().cpu().numpy().copy()

        hidden = [pair(m) for m in self.trunk.layers if isinstance(m, nn.Linear)]
        return hidden, pair(self.mean)


class SACAgent(nn.Module):
    """Actor, critic ensemble, target critic and log α, with one optimizer over all of them."""

    def __init__(self, config: SACConfig, obs_dim: int, action_dim: int):
        super().__init__()
        self.config, self.obs_dim, self.action_dim = config, obs_dim, action_dim
        self.actor = TanhGaussianActor(obs_dim, action_dim, config.actor_hidden_dims, config.actor_fc_scale)
        self.critic = EnsembleMLP(NUM_CRITICS, obs_dim + action_dim, (*config.value_hidden_dims, 1),
                                  layer_norm=False, gelu_approximate="tanh")
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.zeros(()))
        self.target_entropy = (-config.target_entropy_multiplier * action_dim if config.target_entropy is None
                               else config.target_entropy)
        self.optimizer = torch.optim.Adam([*self.actor.parameters(), *self.critic.parameters(), self.log_alpha],
                                          lr=config.lr)

    def q_values(self, obs: torch.Tensor, actions: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Q_i(s, a) for every ensemble member: (NUM_CRITICS, B)."""
        net = self.target_critic if target else self.critic
        return net(torch.cat([obs, actions], -1)).squeeze(-1)

    def losses(self, batch: Mapping[str, torch.Tensor], noise: torch.Tensor | None = None,
               next_noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Critic, actor and temperature losses (plus diagnostics) at the current parameters.

        `noise`/`next_noise` are the N(0, I) draws behind a ~ π(·|s) and a' ~ π(·|s'); drawn when None.
        """
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_actions, next_log_prob = squashed_sample(*self.actor(batch["next_observations"]), next_noise)
            next_q = self.q_values(batch["next_observations"], next_actions, target=True).min(0).values
            discount = self.config.discount * batch["masks"]
            target_q = batch["rewards"] + discount * (next_q - alpha * next_log_prob)
        q = self.q_values(batch["observations"], batch["actions"])
        critic_loss = (q - target_q).square().mean()

        mean, log_std = self.actor(batch["observations"])
        actions, log_prob = squashed_sample(mean, log_std, noise)
        actor_loss = (alpha * log_prob - self.q_values(batch["observations"], actions).min(0).values).mean()
        entropy = -log_prob.detach().mean()
        alpha_loss = self.log_alpha.exp() * (entropy - self.target_entropy)
        return {"critic_loss": critic_loss, "actor_loss": actor_loss, "alpha_loss": alpha_loss,
                "q_mean": q.detach().mean(), "alpha": alpha, "entropy": entropy,
                "std": log_std.detach().exp().mean()}

    def update(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One SAC step on `batch`; returns the losses and diagnostics (as computed before the step)."""
        info = self.losses(batch)
        groups = ((info["critic_loss"], list(self.critic.parameters())),
                  (info["actor_loss"], list(self.actor.parameters())),
                  (info["alpha_loss"], [self.log_alpha]))
        for loss, params in groups:  # each loss trains only its own parameters
            for param, grad in zip(params, torch.autograd.grad(loss, params)):
                param.grad = grad
        with torch.no_grad():  # towards the critic before this step, as OGBench does
            for target, online in zip(self.target_critic.parameters(), self.critic.parameters()):
                target.lerp_(online, self.config.tau)
        self.optimizer.step()
        return info

    @torch.no_grad()
    def sample_action(self, obs: np.ndarray) -> np.ndarray:
        """An exploration action a ~ π(·|obs) for one observation."""
        device = self.log_alpha.device
        action, _ = squashed_sample(*self.actor(torch.as_tensor(obs, dtype=torch.float32, device=device)[None]))
        return action[0].cpu().numpy()
