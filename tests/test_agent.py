"""NF-HIQL losses against a per-sample hand computation, the EMA update, and inference."""
import math

import pytest
import torch

from nfhiql_core.algo.agent import AgentConfig, HIQLAgent, TorchPolicy
from nfhiql_core.algo.networks import length_normalize

OBS, ACT, B = 3, 2, 5


def tiny_agent(policy: str, subgoal_space: str = "rep", **overrides) -> HIQLAgent:
    torch.manual_seed(0)
    config = AgentConfig(policy=policy, subgoal_space=subgoal_space, actor_hidden_dims=(16, 16),
                         value_hidden_dims=(16, 16), flow_hidden_dims=(16,), flow_encode_dim=8,
                         flow_blocks=2, rep_dim=4, flow_noise_std=0.0, **overrides)
    agent = HIQLAgent(config, OBS, ACT)
    with torch.no_grad():  # move away from the zero-initialised flow outputs and identical EMA copy
        for p in agent.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return agent


def fixed_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    batch = {k: torch.randn(B, OBS, generator=g) for k in
             ("observations", "next_observations", "value_goals", "low_actor_goals", "high_actor_goals",
              "high_actor_targets")}
    batch["actions"] = torch.rand(B, ACT, generator=g) * 2 - 1
    # samples 0 and 3 are at their goal (reward 0, mask 0); the rest are not (reward −1, mask 1)
    batch["masks"] = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    batch["rewards"] = batch["masks"] - 1.0
    return batch


def hand_losses(agent: HIQLAgent, batch: dict[str, torch.Tensor]) -> tuple[float, float, float]:
    """The HIQL losses written out one sample at a time with plain Python arithmetic."""
    c = agent.config

    def row(key: str, i: int) -> torch.Tensor:
        return batch[key][i: i + 1]

    def values(net, s: torch.Tensor, g: torch.Tensor) -> list[float]:
        return net(s, agent.goal_rep(s, g))[:, 0].tolist()  # one value per head

    value_loss = low_loss = high_loss = 0.0
    with torch.no_grad():
        for i in range(B):
            s, s_next, g = row("observations", i), row("next_observations", i), row("value_goals", i)
            r, m = batch["rewards"][i].item(), batch["masks"][i].item()
            v = values(agent.value, s, g)
            v_bar = values(agent.target_value, s, g)
            v_bar_next = values(agent.target_value, s_next, g)
            adv = r + c.discount * m * min(v_bar_next) - sum(v_bar) / len(v_bar)
            weight = c.expectile if adv >= 0 else 1 - c.expectile
            for head in range(c.num_value_heads):
                value_loss += weight * (r + c.discount * m * v_bar_next[head] - v[head]) ** 2 / B

            w = row("low_actor_goals", i)
            a_low = (sum(values(agent.value, s_next, w)) - sum(values(agent.value, s, w))) / c.num_value_heads
            low_goal = agent.goal_rep(s, w) if c.subgoal_space == "rep" else w
            log_pi = agent.low_actor.log_prob(row("actions", i), torch.cat([s, low_goal], -1)).item()
            low_loss -= min(math.exp(c.low_alpha * a_low), c.adv_weight_clip) * log_pi / B

            t, hg = row("high_actor_targets", i), row("high_actor_goals", i)
            a_high = (sum(values(agent.value, t, hg)) - sum(values(agent.value, s, hg))) / c.num_value_heads
            target = agent.goal_rep(s, t) if c.subgoal_space == "rep" else t
            log_pi = agent.high_actor.log_prob(target, torch.cat([s, hg], -1)).item()
            high_loss -= min(math.exp(c.high_alpha * a_high), c.adv_weight_clip) * log_pi / B
    return value_loss, low_loss, high_loss


@pytest.mark.parametrize("policy,subgoal_space", [("flow", "rep"), ("gaussian", "rep"), ("flow", "state")])
def test_losses_match_hand_computation(policy, subgoal_space):
    agent = tiny_agent(policy, subgoal_space)
    batch = fixed_batch()
    total, info = agent.compute_losses(batch)
    value_loss, low_loss, high_loss = hand_losses(agent, batch)
    assert info["value/loss"].item() == pytest.approx(value_loss, rel=1e-5, abs=1e-6)
    assert info["low_actor/loss"].item() == pytest.approx(low_loss, rel=1e-5, abs=1e-5)
    assert info["high_actor/loss"].item() == pytest.approx(high_loss, rel=1e-5, abs=1e-5)
    assert total.item() == pytest.approx(value_loss + low_loss + high_loss, rel=1e-5)


def test_advantage_weights_are_clipped():
    agent = tiny_agent("gaussian", low_alpha=1e4, high_alpha=1e4)
    _, info = agent.compute_losses(fixed_batch())
    assert info["low_actor/weight"].item() <= agent.config.adv_weight_clip
    assert info["high_actor/weight"].item() <= agent.config.adv_weight_clip


def test_gaussian_log_prob_with_constant_std():
    agent = tiny_agent("gaussian")
    context = torch.randn(4, OBS + agent.subgoal_dim)
    actions = torch.randn(4, ACT)
    mean = agent.low_actor.mean(agent.low_actor.trunk(context))
    expected = -0.5 * ((actions - mean) ** 2).sum(-1) - ACT / 2 * math.log(2 * math.pi)
    assert torch.allclose(agent.low_actor.log_prob(actions, context), expected, atol=1e-5)


def test_update_moves_only_trainable_params_and_applies_ema():
    agent = tiny_agent("flow")
    target_before = [p.clone() for p in agent.target_value.parameters()]
    agent.update(fixed_batch())
    tau = agent.config.tau
    for old, target, online in zip(target_before, agent.target_value.parameters(), agent.value.parameters()):
        assert torch.allclose(target, (1 - tau) * old + tau * online, atol=1e-6)
    trainable = {id(p) for p in agent.trainable_parameters()}
    assert not trainable & {id(p) for p in agent.target_value.parameters()}


def test_inference_is_deterministic_at_zero_temperature_and_bounded():
    agent = tiny_agent("flow")
    obs, goals = torch.randn(6, OBS), torch.randn(6, OBS)
    a = agent.sample_actions(obs, goals)
    assert torch.equal(a, agent.sample_actions(obs, goals))
    assert a.abs().max() <= 1.0
    subgoals, log_prob = agent.plan(obs, goals, torch.zeros(6, agent.subgoal_dim))
    assert torch.allclose(subgoals, length_normalize(subgoals), atol=1e-5)
    assert torch.isfinite(log_prob).all()
    policy = TorchPolicy(agent, temperature=1.0, seed=3)
    again = TorchPolicy(agent, temperature=1.0, seed=3)
    assert (policy(obs.numpy(), goals.numpy()) == again(obs.numpy(), goals.numpy())).all()


def test_config_rejects_unknown_policy():
    with pytest.raises(ValueError, match="policy"):
        AgentConfig(policy="diffusion")
