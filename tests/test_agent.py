"""NF-HIQL losses against a per-sample hand computation, the EMA updates, the learning-rate schedule and
optimizers, `compute_dtype: auto`, and inference (value-guided subgoals included)."""
import math

import pytest
import torch
from torch import nn

import nfhiql_core.algo.precision as precision
from nfhiql_core.algo.agent import AgentConfig, HIQLAgent, TorchPolicy, lr_factor
from nfhiql_core.algo.networks import length_normalize
from nfhiql_core.errors import ConfigError

OBS, ACT, B = 3, 2, 5


def tiny_agent(policy: str, subgoal_space: str = "rep", total_steps: int | None = None, **overrides) -> HIQLAgent:
    torch.manual_seed(0)
    config = AgentConfig(policy=policy, subgoal_space=subgoal_space, actor_hidden_dims=(16, 16),
                         value_hidden_dims=(16, 16), flow_hidden_dims=(16,), flow_encode_dim=8,
                         flow_blocks=2, rep_dim=4, flow_noise_std=0.0, **overrides)
    agent = HIQLAgent(config, OBS, ACT, total_steps)
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


@pytest.mark.parametrize("field, value", [
    ("lr_schedule", "linear"), ("lr_warmup_steps", -1), ("lr_final_fraction", 1.5), ("optimizer", "sgd"),
    ("weight_decay", -0.1), ("policy_ema", 1.0), ("flow_cond_activation", "tanh"), ("flow_cond_hidden_dims", (0,)),
])
def test_config_rejects_bad_recipe_knobs(field, value):
    with pytest.raises(ValueError, match=f"^{field} must be") as e:
        AgentConfig(**{field: value})
    assert "\n" not in str(e.value)


def test_cosine_schedule_at_warmup_end_middle_and_last_step():
    config = AgentConfig(lr_schedule="cosine", lr_warmup_steps=10, lr_final_fraction=0.1)
    total = 111  # decay over steps 10..110: its middle is step 60
    assert lr_factor(0, config, total) == 0.0 and lr_factor(5, config, total) == pytest.approx(0.5)
    assert lr_factor(10, config, total) == pytest.approx(1.0)  # end of the warm-up: the peak
    assert lr_factor(60, config, total) == pytest.approx(0.55)  # half way down: (1 + 0.1) / 2
    assert lr_factor(110, config, total) == pytest.approx(0.1)  # the last step: lr_final_fraction
    constant = AgentConfig(lr_warmup_steps=4)
    assert [lr_factor(t, constant, total) for t in (0, 2, 4, 110)] == [0.0, 0.5, 1.0, 1.0]


def test_agent_steps_follow_the_schedule():
    total = 12
    agent = tiny_agent("flow", total_steps=total, lr_schedule="cosine", lr_warmup_steps=3, lr_final_fraction=0.2)
    lrs = [agent.update(fixed_batch())["lr"].item() for _ in range(total)]
    assert lrs == pytest.approx([agent.config.lr * lr_factor(t, agent.config, total) for t in range(total)])
    assert lrs[-1] == pytest.approx(0.2 * agent.config.lr)
    with pytest.raises(ValueError, match="total steps"):
        tiny_agent("flow", lr_schedule="cosine")
    assert "lr" not in tiny_agent("flow").update(fixed_batch())  # constant: no scheduler, nothing logged


def test_adamw_decays_weights_decoupled_from_the_gradient():
    """Same init, same batch: one AdamW step with weight decay λ differs from one without by −lr·λ·θ."""
    decay = 0.5
    plain, decayed = tiny_agent("flow", optimizer="adamw"), tiny_agent("flow", optimizer="adamw", weight_decay=decay)
    before = [p.clone() for p in decayed.trainable_parameters()]
    plain.update(fixed_batch())
    decayed.update(fixed_batch())
    lr = decayed.config.lr
    for theta, a, b in zip(before, plain.trainable_parameters(), decayed.trainable_parameters()):
        assert torch.allclose(b - a, -lr * decay * theta, atol=1e-7)
    assert isinstance(decayed.optimizer, torch.optim.AdamW)


def test_policy_ema_is_the_closed_form_average_and_acts():
    d = 0.8
    agent = tiny_agent("flow", policy_ema=d)

    def flat(params) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in params])

    ema_0 = flat(agent.ema_actors.parameters())  # tiny_agent perturbed the copies away from the online weights
    history = []  # θ_1 … θ_k
    for _ in range(4):
        agent.update(fixed_batch())
        history.append(flat([*agent.high_actor.parameters(), *agent.low_actor.parameters()]))
    k = len(history)
    expected = d ** k * ema_0 + (1 - d) * sum(d ** (k - i) * theta for i, theta in enumerate(history, 1))
    ema = flat(agent.ema_actors.parameters())
    assert torch.allclose(ema, expected, atol=1e-6)
    assert not torch.allclose(ema, history[-1])
    assert not {id(p) for p in agent.ema_actors.parameters()} & {id(p) for p in agent.trainable_parameters()}
    obs, goals = torch.randn(4, OBS), torch.randn(4, OBS)
    z = torch.zeros(4, agent.subgoal_dim)
    expected_subgoals, _ = agent.ema_actors["high"].sample_with_log_prob(torch.cat([obs, goals], -1), z)
    assert torch.allclose(agent.plan(obs, goals, z)[0], length_normalize(expected_subgoals))
    assert "ema_actors.high.encoder.layers.0.weight" in agent.state_dict()  # checkpointed with the model
    assert not any(k.startswith("ema_actors") for k in tiny_agent("flow").state_dict())  # off: as before


def test_conditioning_network_follows_its_knobs():
    agent = tiny_agent("flow", flow_cond_hidden_dims=(12, 12, 12), flow_cond_activation="silu")
    encoder = agent.high_actor.encoder
    assert [m.out_features for m in encoder.layers if isinstance(m, nn.Linear)] == [12, 12, 12, 8]
    assert sum(isinstance(m, nn.SiLU) for m in encoder.layers) == 3
    default = tiny_agent("flow").high_actor.encoder  # None: actor_hidden_dims, GELU (as before)
    assert [m.out_features for m in default.layers if isinstance(m, nn.Linear)] == [16, 16, 8]
    assert sum(isinstance(m, nn.GELU) for m in default.layers) == 2


class _FirstCoordinateValue(nn.Module):
    """V(s, ·) = s[0] on every head: the best subgoal is the candidate with the largest first coordinate."""

    def forward(self, observations: torch.Tensor, goal_reps: torch.Tensor) -> torch.Tensor:
        return observations[:, 0].expand(2, -1)


def test_value_guided_selection_picks_the_argmax_v_candidate():
    agent = tiny_agent("flow", "state")
    agent.value = _FirstCoordinateValue()
    n, candidates = 6, 5
    obs, goals = torch.randn(n, OBS), torch.randn(n, OBS)
    z = torch.randn(candidates, n, OBS)
    each = torch.stack([agent.plan(obs, goals, z[c])[0] for c in range(candidates)])  # (candidates, n, OBS)
    best = each[:, :, 0].argmax(0)
    assert len(set(best.tolist())) > 1  # the construction does not always favour one candidate
    assert torch.allclose(agent.select_subgoal(obs, goals, z), each[best, torch.arange(n)])

    # sample_actions: candidate 0 is z = 0, the others N(0, I) draws from the policy's generator
    actions = agent.sample_actions(obs, goals, generator=torch.Generator().manual_seed(7),
                                   subgoal_candidates=candidates)
    draws = torch.randn(candidates - 1, n, OBS, generator=torch.Generator().manual_seed(7))
    z = torch.cat([torch.zeros(1, n, OBS), draws])
    expected, _ = agent.act(obs, agent.select_subgoal(obs, goals, z), torch.zeros(n, ACT))
    assert torch.equal(actions, expected)


def test_value_guided_selection_refuses_rep_subgoals():
    agent = tiny_agent("flow", "rep")
    with pytest.raises(ConfigError, match="subgoal_space: state"):
        TorchPolicy(agent, subgoal_candidates=3)(torch.randn(2, OBS).numpy(), torch.randn(2, OBS).numpy())
    with pytest.raises(ConfigError, match=">= 1"):
        TorchPolicy(agent, subgoal_candidates=0)


@pytest.mark.parametrize("flags, native", [("fpu avx2 avx512f", False), ("fpu avx512f avx512_bf16", True),
                                           ("fpu amx_tile amx_bf16", True)])
def test_auto_compute_dtype_reads_the_cpus_bf16_flags(tmp_path, monkeypatch, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    precision.cpu_bf16_flags.cache_clear()
    try:
        cpu = torch.device("cpu")
        assert precision.bf16_native(cpu) is native
        assert precision.autocast_dtype("auto", cpu) == (torch.bfloat16 if native else None)
        assert precision.autocast_dtype("bfloat16", cpu) == torch.bfloat16
        assert precision.autocast_dtype("float32", cpu) is None
        assert precision.bf16_capability(cpu).startswith("bf16 native (" if native else "bf16 not native (no ")
        agent = tiny_agent("flow", compute_dtype="auto")
        seen = []
        real = agent.compute_losses

        def record_autocast(batch):
            seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            return real(batch)

        agent.compute_losses = record_autocast
        agent.update(fixed_batch())
        assert seen == [torch.bfloat16 if native else None]
    finally:
        precision.cpu_bf16_flags.cache_clear()


def test_auto_compute_dtype_without_cpuinfo_is_float32(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "missing")
    precision.cpu_bf16_flags.cache_clear()
    try:
        assert precision.cpu_bf16_flags() == () and precision.autocast_dtype("auto", torch.device("cpu")) is None
    finally:
        precision.cpu_bf16_flags.cache_clear()
