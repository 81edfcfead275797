"""NF-HIQL: hierarchical implicit Q-learning with normalizing-flow (or Gaussian) policies.

Read top to bottom: config, networks, losses, one `update`, then inference.

* Value: V_i(s, g) = MLP_i([s, φ(s, g)]) for an ensemble of heads with EMA targets, trained
  action-free with the expectile loss on the sparse reward (0 at the goal index, else −1).
  φ is shared and trained only by the value loss; the target value uses the online φ.
* High-level policy π_h(subgoal | s, g): subgoal = φ(s, s_{t+k}) (HIQL) or the raw observation
  s_{t+k} (`subgoal_space: state`, the NF-HIQL authors' variant), AWR-weighted with
  A_h = V(s_{t+k}, g) − V(s, g).
* Low-level policy π_l(a | s, subgoal) with A_l = V(s', w) − V(s, w), w = s_{min(t+k, end)}.
* Policies are conditional RealNVP flows (`policy: flow`) or Gaussians (`policy: gaussian`,
  plain HIQL) in the same code path. AWR weights are min(exp(α·A), clip).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import nn

from nfhiql_core.algo.networks import GoalConditionedValue, GoalRepresentation, length_normalize
from nfhiql_core.algo.policies import FlowPolicy, GaussianPolicy

POLICY_KINDS = ("flow", "gaussian")
SUBGOAL_SPACES = ("rep", "state")
COMPUTE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class AgentConfig:
    """Hyperparameters of the agent (defaults: OGBench's HIQL, flow policies)."""

    policy: str = "flow"
    subgoal_space: str = "rep"
    lr: float = 3e-4
    actor_hidden_dims: tuple[int, ...] = (512, 512, 512)
    value_hidden_dims: tuple[int, ...] = (512, 512, 512)
    layer_norm: bool = True
    num_value_heads: int = 2
    discount: float = 0.99
    tau: float = 0.005
    expectile: float = 0.7
    low_alpha: float = 3.0
    high_alpha: float = 3.0
    adv_weight_clip: float = 100.0
    subgoal_steps: int = 25
    rep_dim: int = 10
    const_std: bool = True
    flow_blocks: int = 4
    flow_hidden_dims: tuple[int, ...] = (256, 256)
    flow_encode_dim: int = 64
    flow_max_log_scale: float = 3.0
    flow_noise_std: float = 0.1
    # bfloat16 runs the hidden layers of the value ensemble and φ in bf16 autocast during training
    # (output layers, policies, losses and optimizer stay float32): ~2.7x faster matmuls on CPUs
    # with AVX512-BF16 and on GPUs.
    compute_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.policy not in POLICY_KINDS:
            raise ValueError(f"policy must be one of {POLICY_KINDS}, got {self.policy!r}")
        if self.subgoal_space not in SUBGOAL_SPACES:
            raise ValueError(f"subgoal_space must be one of {SUBGOAL_SPACES}, got {self.subgoal_space!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {tuple(COMPUTE_DTYPES)}, got {self.compute_dtype!r}")
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {self.expectile}")
        if not 0.0 < self.discount < 1.0:
            raise ValueError(f"discount must be in (0, 1), got {self.discount}")
        if self.subgoal_steps < 1 or self.num_value_heads < 1 or self.flow_blocks < 1:
            raise ValueError("subgoal_steps, num_value_heads and flow_blocks must be >= 1")


class HIQLAgent(nn.Module):
    """Value, goal representation and the two policies, with one optimizer over all of them."""

    def __init__(self, config: AgentConfig, obs_dim: int, action_dim: int):
        super().__init__()
        self.config = config
        self.obs_dim, self.action_dim = obs_dim, action_dim
        c = config
        self.goal_rep = GoalRepresentation(obs_dim, obs_dim, c.value_hidden_dims, c.rep_dim, c.layer_norm)
        self.value = GoalConditionedValue(obs_dim, c.rep_dim, c.value_hidden_dims, c.num_value_heads,
                                          c.layer_norm)
        self.target_value = copy.deepcopy(self.value).requires_grad_(False)
        self.subgoal_dim = c.rep_dim if c.subgoal_space == "rep" else obs_dim
        self.high_actor = self._make_policy(2 * obs_dim, self.subgoal_dim)
        self.low_actor = self._make_policy(obs_dim + self.subgoal_dim, action_dim)
        self.optimizer = torch.optim.Adam(self.trainable_parameters(), lr=c.lr)

    def _make_policy(self, context_dim: int, dim: int) -> nn.Module:
        c = self.config
        if c.policy == "flow":
            return FlowPolicy(context_dim, dim, c.actor_hidden_dims, c.flow_encode_dim, c.flow_blocks,
                              c.flow_hidden_dims, c.flow_max_log_scale)
        return GaussianPolicy(context_dim, dim, c.actor_hidden_dims, c.const_std)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter the optimizer updates (all but the EMA target value)."""
        target = {id(p) for p in self.target_value.parameters()}
        return [p for p in self.parameters() if id(p) not in target and p.requires_grad]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ losses
    def compute_losses(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss (value + low actor + high actor) and detached diagnostics.

        Every no-gradient φ and value evaluation of the step is stacked into one batched pass.
        """
        c = self.config
        obs, next_obs, goals = batch["observations"], batch["next_observations"], batch["value_goals"]
        low_goals, high_goals = batch["low_actor_goals"], batch["high_actor_goals"]
        high_targets = batch["high_actor_targets"]
        n = obs.shape[0]

        rep_goal = self.goal_rep(obs, goals)  # φ(s, g), trained by the value loss
        with torch.no_grad():
            reps = self.goal_rep(torch.cat([next_obs, next_obs, obs, high_targets, obs, obs]),
                                 torch.cat([goals, low_goals, low_goals, high_goals, high_goals, high_targets]))
            rep_next_goal, rep_next_low, rep_low, rep_target_high, rep_high, rep_subgoal = reps.split(n)
            target_v = self.target_value(torch.cat([next_obs, obs]), torch.cat([rep_next_goal, rep_goal.detach()]))
            next_v_target, v_target = target_v.split(n, dim=1)
            online_v = self.value(torch.cat([next_obs, obs, high_targets, obs]),
                                  torch.cat([rep_next_low, rep_low, rep_target_high, rep_high])).mean(0)
            v_next_low, v_low, v_target_high, v_high = online_v.split(n)

        v = self.value(obs, rep_goal)
        value_loss, value_info = self._value_loss(batch, v, next_v_target, v_target)

        # Policies always run in float32: their many small ops gain nothing from bf16 autocast.
        with torch.autocast(obs.device.type, enabled=False):
            low_adv = v_next_low - v_low
            low_context = torch.cat([obs, rep_low if c.subgoal_space == "rep" else low_goals], dim=-1)
            low_loss, low_info = self._actor_loss(self.low_actor, batch["actions"], low_context, low_adv,
                                                  c.low_alpha)
            high_adv = v_target_high - v_high
            high_target = rep_subgoal if c.subgoal_space == "rep" else high_targets
            high_context = torch.cat([obs, high_goals], dim=-1)
            high_loss, high_info = self._actor_loss(self.high_actor, high_target, high_context, high_adv,
                                                    c.high_alpha)

        info = {**value_info, **{f"low_actor/{k}": x for k, x in low_info.items()},
                **{f"high_actor/{k}": x for k, x in high_info.items()}}
        return value_loss + low_loss + high_loss, info

    def _value_loss(self, batch: Mapping[str, torch.Tensor], v: torch.Tensor, next_v_target: torch.Tensor,
                    v_target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Action-free IQL with double V: expectile regression of each head onto r + γ·m·V̄_i(s', g)."""
        c = self.config
        rewards, masks = batch["rewards"], batch["masks"]
        q = rewards + c.discount * masks * next_v_target.min(0).values
        adv = q - v_target.mean(0)
        q_heads = rewards + c.discount * masks * next_v_target  # (heads, B)
        weight = torch.where(adv >= 0, c.expectile, 1.0 - c.expectile)
        loss = (weight * (q_heads - v).pow(2)).mean(1).sum()
        return loss, {"value/loss": loss.detach(), "value/v_mean": v.detach().mean(),
                      "value/adv_mean": adv.mean(), "value/q_mean": q.mean()}

    def _actor_loss(self, actor: nn.Module, targets: torch.Tensor, context: torch.Tensor, adv: torch.Tensor,
                    alpha: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """AWR: −mean(min(exp(α·A), clip) · log π(target | context))."""
        weights = torch.exp(alpha * adv).clamp(max=self.config.adv_weight_clip)
        if self.config.policy == "flow" and self.config.flow_noise_std > 0:
            targets = targets + self.config.flow_noise_std * torch.randn_like(targets)
        log_prob = actor.log_prob(targets, context)
        loss = -(weights * log_prob).mean()
        return loss, {"loss": loss.detach(), "log_prob": log_prob.detach().mean(), "adv": adv.mean(),
                      "weight": weights.mean()}

    def update(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gradient step on all losses, then the EMA update of the target value."""
        dtype = COMPUTE_DTYPES[self.config.compute_dtype]
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            loss, info = self.compute_losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.target_value.parameters()), list(self.value.parameters()),
                                 self.config.tau)
        info["loss"] = loss.detach()
        return info

    def batch_to_tensors(self, batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Numpy batch from the goal sampler → float tensors on the agent's device."""
        device = self.device
        return {k: torch.as_tensor(v, device=device, dtype=torch.float32) for k, v in batch.items()
                if v.dtype != np.int64}

    # --------------------------------------------------------------- inference
    @torch.no_grad()
    def plan(self, observations: torch.Tensor, goals: torch.Tensor,
             z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """High level: subgoal (length-normalised in rep space) and the flow's log-likelihood of it."""
        subgoals, log_prob = self.high_actor.sample_with_log_prob(torch.cat([observations, goals], -1), z)
        if self.config.subgoal_space == "rep":
            subgoals = length_normalize(subgoals)
        return subgoals, log_prob

    @torch.no_grad()
    def act(self, observations: torch.Tensor, subgoals: torch.Tensor,
            z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Low level: action clipped to [−1, 1] and the log-likelihood of the unclipped sample."""
        actions, log_prob = self.low_actor.sample_with_log_prob(torch.cat([observations, subgoals], -1), z)
        return actions.clamp(-1.0, 1.0), log_prob

    @torch.no_grad()
    def sample_actions(self, observations: torch.Tensor, goals: torch.Tensor, temperature: float = 0.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Full hierarchical policy; the high level is re-queried on every call (as in HIQL)."""
        n = observations.shape[0]

        def noise(dim: int) -> torch.Tensor:
            if temperature == 0.0:
                return torch.zeros(n, dim, device=observations.device)
            return temperature * torch.randn(n, dim, generator=generator, device=observations.device)

        subgoals, _ = self.plan(observations, goals, noise(self.subgoal_dim))
        actions, _ = self.act(observations, subgoals, noise(self.action_dim))
        return actions


class TorchPolicy:
    """Numpy-in / numpy-out adapter of an agent for `nfhiql_core.evaluation.protocol.evaluate`."""

    def __init__(self, agent: HIQLAgent, temperature: float = 0.0, seed: int = 0):
        self.agent = agent
        self.temperature = temperature
        self.generator = torch.Generator(device=agent.device).manual_seed(seed)

    def __call__(self, observations: np.ndarray, goals: np.ndarray) -> np.ndarray:
        device = self.agent.device
        obs = torch.as_tensor(observations, dtype=torch.float32, device=device)
        goal = torch.as_tensor(goals, dtype=torch.float32, device=device)
        return self.agent.sample_actions(obs, goal, self.temperature, self.generator).cpu().numpy()
