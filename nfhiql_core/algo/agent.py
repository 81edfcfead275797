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
* Optimisation: Adam or AdamW over all of it, with an optional linear warm-up and cosine decay of the
  learning rate (`lr_factor`), and optional EMA copies of both policies that act in their place at
  inference (evaluation, export) when `policy_ema` > 0.
* Inference can choose the subgoal by value (`select_subgoal`): of several high-level samples, the one
  with the highest V(subgoal, goal). State-space subgoals only: V takes a state as its first argument,
  and a rep-space subgoal φ(s, w) is an encoding of the pair (s, w), not a state that V can score.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import nn

from nfhiql_core.algo.networks import ACTIVATIONS, GoalConditionedValue, GoalRepresentation, length_normalize
from nfhiql_core.algo.policies import FlowPolicy, GaussianPolicy
from nfhiql_core.algo.precision import AUTOCAST_DTYPES, autocast_dtype
from nfhiql_core.errors import ConfigError

POLICY_KINDS = ("flow", "gaussian")
SUBGOAL_SPACES = ("rep", "state")
COMPUTE_DTYPES = (*AUTOCAST_DTYPES, "auto")
LR_SCHEDULES = ("constant", "cosine")
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@dataclass(frozen=True)
class AgentConfig:
    """Hyperparameters of the agent (defaults: OGBench's HIQL, flow policies)."""

    policy: str = "flow"
    subgoal_space: str = "rep"
    lr: float = 3e-4
    lr_schedule: str = "constant"  # constant | cosine: cosine decays to lr_final_fraction·lr at the last step
    lr_warmup_steps: int = 0  # linear warm-up of the learning rate from 0 over this many steps (either schedule)
    lr_final_fraction: float = 0.0  # cosine: the learning rate at the last training step, as a fraction of lr
    optimizer: str = "adam"  # adam (weight_decay: L2 added to the gradient) | adamw (decoupled weight decay)
    weight_decay: float = 0.0  # weight-decay coefficient of the optimizer (0 = none)
    policy_ema: float = 0.0  # decay of EMA copies of both policies that evaluation and export use; 0 = off
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
    flow_layer_norm: bool = True  # LayerNorm in the coupling MLPs
    flow_zero_init: bool = True  # zero-initialised last coupling layer: every coupling starts as the identity
    flow_cond_hidden_dims: tuple[int, ...] | None = None  # conditioning MLP of the flows; None: actor_hidden_dims
    flow_cond_activation: str = "gelu"  # relu | silu | gelu, the conditioning network's activation
    # bfloat16 runs the hidden layers of the value ensemble and φ in bf16 autocast during training
    # (output layers, policies, losses and optimizer stay float32): ~2.7x faster matmuls on CPUs
    # with AVX512-BF16 and on GPUs, ~30x slower elsewhere; auto: bfloat16 where the training device
    # runs it natively (nfhiql_core/algo/precision.py), else float32.
    compute_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.policy not in POLICY_KINDS:
            raise ValueError(f"policy must be one of {POLICY_KINDS}, got {self.policy!r}")
        if self.subgoal_space not in SUBGOAL_SPACES:
            raise ValueError(f"subgoal_space must be one of {SUBGOAL_SPACES}, got {self.subgoal_space!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {self.expectile}")
        if not 0.0 < self.discount < 1.0:
            raise ValueError(f"discount must be in (0, 1), got {self.discount}")
        if self.subgoal_steps < 1 or self.num_value_heads < 1 or self.flow_blocks < 1:
            raise ValueError("subgoal_steps, num_value_heads and flow_blocks must be >= 1")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_warmup_steps < 0:
            raise ValueError(f"lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        if not 0.0 <= self.lr_final_fraction <= 1.0:
            raise ValueError(f"lr_final_fraction must be in [0, 1], got {self.lr_final_fraction}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.policy_ema < 1.0:
            raise ValueError(f"policy_ema must be in [0, 1), got {self.policy_ema}")
        if self.flow_cond_activation not in ACTIVATIONS:
            raise ValueError(f"flow_cond_activation must be one of {tuple(ACTIVATIONS)}, "
                             f"got {self.flow_cond_activation!r}")
        if any(d < 1 for d in self.flow_cond_hidden_dims or ()):
            raise ValueError(f"flow_cond_hidden_dims must be >= 1, got {list(self.flow_cond_hidden_dims)}")

    @property
    def lr_scheduled(self) -> bool:
        """Whether the learning rate changes during training (warm-up or cosine decay)."""
        return self.lr_schedule != "constant" or self.lr_warmup_steps > 0


def lr_factor(step: int, config: AgentConfig, total_steps: int) -> float:
    """Multiplier of `lr` for update `step` (0-based) of `total_steps`, as optax.warmup_cosine_decay_schedule
    from 0 (the NF-HIQL authors'): step/lr_warmup_steps during the warm-up, then 1 (constant) or a cosine
    from 1 at the warm-up's end to lr_final_fraction at the last step (total_steps − 1)."""
    warmup = config.lr_warmup_steps
    if step < warmup:
        return step / warmup
    if config.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(total_steps - 1 - warmup, 1))
    final = config.lr_final_fraction
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


class HIQLAgent(nn.Module):
    """Value, goal representation and the two policies, with one optimizer over all of them.

    `total_steps` (the run's step count) is needed only by a learning-rate schedule (`lr_scheduled`).
    """

    def __init__(self, config: AgentConfig, obs_dim: int, action_dim: int, total_steps: int | None = None):
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
        self.ema_actors = None if c.policy_ema == 0.0 else nn.ModuleDict(
            {"high": copy.deepcopy(self.high_actor), "low": copy.deepcopy(self.low_actor)}).requires_grad_(False)
        # foreach: each update phase as one multi-tensor op over all parameters, not a Python loop over them
        # (the flows have ~150 small tensors); bit-exact across a checkpoint resume like the loop
        self.optimizer = OPTIMIZERS[c.optimizer](self.trainable_parameters(), lr=c.lr, weight_decay=c.weight_decay,
                                                 foreach=True)
        self.scheduler = None
        if c.lr_scheduled:
            if total_steps is None:
                raise ValueError("agent.lr_schedule / lr_warmup_steps: the agent needs the run's total steps")
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                               lambda step: lr_factor(step, c, total_steps))

    def _make_policy(self, context_dim: int, dim: int) -> nn.Module:
        c = self.config
        if c.policy == "flow":
            cond_dims = c.actor_hidden_dims if c.flow_cond_hidden_dims is None else c.flow_cond_hidden_dims
            return FlowPolicy(context_dim, dim, cond_dims, c.flow_encode_dim, c.flow_blocks, c.flow_hidden_dims,
                              c.flow_max_log_scale, ACTIVATIONS[c.flow_cond_activation], c.flow_layer_norm,
                              c.flow_zero_init)
        return GaussianPolicy(context_dim, dim, c.actor_hidden_dims, c.const_std)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter the optimizer updates (all but the EMA copies: target value, policies)."""
        target = {id(p) for p in self.target_value.parameters()}
        return [p for p in self.parameters() if id(p) not in target and p.requires_grad]

    def inference_actors(self) -> tuple[nn.Module, nn.Module]:
        """(high, low) policies that act: the EMA copies when `policy_ema` > 0, else the trained ones."""
        if self.ema_actors is None:
            return self.high_actor, self.low_actor
        return self.ema_actors["high"], self.ema_actors["low"]

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

    def forward(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`compute_losses`: the module call DistributedDataParallel wraps."""
        return self.compute_losses(batch)

    def update(self, batch: Mapping[str, torch.Tensor],
               forward: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """One gradient step on all losses (and of the learning-rate schedule), then the EMA updates of
        the target value and, when on, of the policy copies. `forward` computes the losses in place of this
        module: its DistributedDataParallel wrapper, which averages the gradients over the ranks."""
        c = self.config
        device = self.device
        dtype = autocast_dtype(c.compute_dtype, device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, info = (forward or self)(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.scheduler is not None:
            info["lr"] = torch.tensor(self.optimizer.param_groups[0]["lr"])  # this step's learning rate
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.target_value.parameters()), list(self.value.parameters()), c.tau)
            if self.ema_actors is not None:
                online = [*self.high_actor.parameters(), *self.low_actor.parameters()]
                torch._foreach_lerp_(list(self.ema_actors.parameters()), online, 1.0 - c.policy_ema)
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
        subgoals, log_prob = self.inference_actors()[0].sample_with_log_prob(torch.cat([observations, goals], -1), z)
        if self.config.subgoal_space == "rep":
            subgoals = length_normalize(subgoals)
        return subgoals, log_prob

    @torch.no_grad()
    def act(self, observations: torch.Tensor, subgoals: torch.Tensor,
            z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Low level: action clipped to [−1, 1] and the log-likelihood of the unclipped sample."""
        actions, log_prob = self.inference_actors()[1].sample_with_log_prob(torch.cat([observations, subgoals], -1),
                                                                            z)
        return actions.clamp(-1.0, 1.0), log_prob

    @torch.no_grad()
    def select_subgoal(self, observations: torch.Tensor, goals: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Value-guided planning: of the subgoals planned from the noises z (candidates, B, subgoal_dim), per
        row the one with the highest `goal_value(subgoal, goal)`. State subgoals only."""
        if self.config.subgoal_space != "state":
            raise ConfigError("subgoal candidates > 1 need agent.subgoal_space: state (V cannot score a rep-space "
                              f"subgoal), got {self.config.subgoal_space!r}")
        candidates, n, _ = z.shape
        goals = goals.repeat(candidates, 1)
        subgoals, _ = self.plan(observations.repeat(candidates, 1), goals, z.flatten(0, 1))
        values = self.goal_value(subgoals, goals).view(candidates, n)
        return subgoals.view(candidates, n, -1)[values.argmax(0), torch.arange(n, device=z.device)]

    @torch.no_grad()
    def goal_value(self, observations: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
        """V(s, g) as the actor advantages use it: the mean of the online value heads on φ(s, g). Shape (B,)."""
        return self.value(observations, self.goal_rep(observations, goals)).mean(0)

    @torch.no_grad()
    def sample_actions(self, observations: torch.Tensor, goals: torch.Tensor, temperature: float = 0.0,
                       generator: torch.Generator | None = None, subgoal_candidates: int = 1) -> torch.Tensor:
        """Full hierarchical policy; the high level is re-queried on every call (as in HIQL).

        With `subgoal_candidates` > 1 the subgoal is `select_subgoal` over z = 0 and
        subgoal_candidates − 1 draws z ~ N(0, I) (not scaled by `temperature`, which then acts on the
        low level only).
        """
        n, device = observations.shape[0], observations.device

        def noise(dim: int) -> torch.Tensor:
            if temperature == 0.0:
                return torch.zeros(n, dim, device=device)
            return temperature * torch.randn(n, dim, generator=generator, device=device)

        if subgoal_candidates == 1:
            subgoals, _ = self.plan(observations, goals, noise(self.subgoal_dim))
        else:
            z = torch.randn(subgoal_candidates - 1, n, self.subgoal_dim, generator=generator, device=device)
            z = torch.cat([torch.zeros(1, n, self.subgoal_dim, device=device), z])
            subgoals = self.select_subgoal(observations, goals, z)
        actions, _ = self.act(observations, subgoals, noise(self.action_dim))
        return actions


class TorchPolicy:
    """Numpy-in / numpy-out adapter of an agent for `nfhiql_core.evaluation.protocol.evaluate`."""

    def __init__(self, agent: HIQLAgent, temperature: float = 0.0, seed: int = 0, subgoal_candidates: int = 1):
        if subgoal_candidates < 1:
            raise ConfigError(f"subgoal candidates must be >= 1, got {subgoal_candidates}")
        self.agent = agent
        self.temperature = temperature
        self.subgoal_candidates = subgoal_candidates
        self.generator = torch.Generator(device=agent.device).manual_seed(seed)

    def __call__(self, observations: np.ndarray, goals: np.ndarray) -> np.ndarray:
        device = self.agent.device
        obs = torch.as_tensor(observations, dtype=torch.float32, device=device)
        goal = torch.as_tensor(goals, dtype=torch.float32, device=device)
        return self.agent.sample_actions(obs, goal, self.temperature, self.generator,
                                         self.subgoal_candidates).cpu().numpy()
