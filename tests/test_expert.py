"""The directional ant expert: SAC losses and update, expert files, resumable training, antmaze datagen."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import ogbench
import pytest
import torch

import nfhiql_core.training.expert as expert_module
from nfhiql_core.algo.sac import SACAgent, SACConfig
from nfhiql_core.cli import main
from nfhiql_core.config import apply_overrides, from_dict
from nfhiql_core.data.ant_expert import ACTION_DIM, OBS_DIM, AntExpert, save_expert
from nfhiql_core.data.datagen import generate_dataset
from nfhiql_core.errors import ConfigError, ExpertError
from nfhiql_core.training.expert import ExpertConfig, train_expert
from nfhiql_core.training.metrics import read_csv

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

OBS, ACT, BATCH = 4, 2, 5
TINY_SAC = {"actor_hidden_dims": [8, 8], "value_hidden_dims": [8, 8], "batch_size": 8}


# ---------------------------------------------------------------- SAC, against numpy


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """flax's default GELU: x·Φ(x) with Φ in its tanh approximation."""
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _actor_np(agent: SACAgent, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, log std) of the pre-tanh Gaussian, from the agent's weights."""
    h = obs
    for layer in (m for m in agent.actor.trunk.layers if isinstance(m, torch.nn.Linear)):
        h = gelu_tanh(h @ _np(layer.weight).T + _np(layer.bias))
    mean = h @ _np(agent.actor.mean.weight).T + _np(agent.actor.mean.bias)
    log_std = np.clip(h @ _np(agent.actor.log_std.weight).T + _np(agent.actor.log_std.bias), -5.0, 2.0)
    return mean, log_std


def _critic_np(net, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Q_i(s, a) of every member, (2, B): per member, GELU(tanh) hidden layers, linear output."""
    weights, biases = [_np(w) for w in net.weights], [_np(b) for b in net.biases]
    out = []
    for i in range(2):
        h = np.concatenate([obs, actions], -1)
        for j, (w, b) in enumerate(zip(weights, biases)):
            h = h @ w[i] + b[i]
            if j < len(weights) - 1:
                h = gelu_tanh(h)
        out.append(h[:, 0])
    return np.stack(out)


def _sample_np(mean: np.ndarray, log_std: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tanh-Gaussian sample and its log-density, with the textbook change of variables."""
    u = mean + np.exp(log_std) * eps
    gauss = (-0.5 * ((u - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
    return np.tanh(u), gauss - np.log(1.0 - np.tanh(u) ** 2).sum(-1)


@pytest.fixture
def tiny():
    """A tiny agent with log α = log 0.3 and a target critic that differs from the critic, plus a batch."""
    torch.manual_seed(0)
    agent = SACAgent(SACConfig(actor_hidden_dims=(8, 8), value_hidden_dims=(8, 8)), OBS, ACT)
    with torch.no_grad():
        agent.log_alpha.fill_(math.log(0.3))
        for p in agent.target_critic.parameters():
            p.add_(0.1 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    batch = {"observations": torch.randn(BATCH, OBS, generator=g),
             "actions": torch.rand(BATCH, ACT, generator=g) * 2 - 1, "rewards": torch.randn(BATCH, generator=g),
             "masks": torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]),
             "next_observations": torch.randn(BATCH, OBS, generator=g)}
    return agent, batch


def test_losses_match_a_numpy_computation(tiny):
    agent, batch = tiny
    g = torch.Generator().manual_seed(2)
    noise, next_noise = torch.randn(BATCH, ACT, generator=g), torch.randn(BATCH, ACT, generator=g)
    got = agent.losses(batch, noise, next_noise)

    b = {k: _np(v) for k, v in batch.items()}
    alpha, gamma, target_entropy = 0.3, 0.99, -0.5 * ACT
    next_a, next_logp = _sample_np(*_actor_np(agent, b["next_observations"]), _np(next_noise))
    next_q = _critic_np(agent.target_critic, b["next_observations"], next_a).min(0)
    td_target = b["rewards"] + gamma * b["masks"] * (next_q - alpha * next_logp)
    critic_loss = ((_critic_np(agent.critic, b["observations"], b["actions"]) - td_target) ** 2).mean()
    a, logp = _sample_np(*_actor_np(agent, b["observations"]), _np(noise))
    actor_loss = (alpha * logp - _critic_np(agent.critic, b["observations"], a).min(0)).mean()
    alpha_loss = alpha * (-logp.mean() - target_entropy)

    for name, want in (("critic_loss", critic_loss), ("actor_loss", actor_loss), ("alpha_loss", alpha_loss)):
        assert got[name].item() == pytest.approx(want, rel=1e-5, abs=1e-6), name
    assert got["entropy"].item() == pytest.approx(-logp.mean(), rel=1e-5)


def test_update_trains_each_loss_on_its_own_parameters(tiny):
    """One step from a fresh Adam moves every parameter by −lr·g/(|g| + eps), g the gradient of its own
    loss only (not of the sum); the target moves τ of the way to the critic as it was before the step."""
    agent, batch = tiny
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    torch.manual_seed(3)  # update() draws a' then a: replay that
    next_noise, noise = torch.randn(BATCH, ACT), torch.randn(BATCH, ACT)
    losses = agent.losses(batch, noise, next_noise)
    groups = {"critic.": losses["critic_loss"], "actor.": losses["actor_loss"], "log_alpha": losses["alpha_loss"]}
    named = dict(agent.named_parameters())
    expected, total = {}, sum(losses[k] for k in ("critic_loss", "actor_loss", "alpha_loss"))
    for prefix, loss in groups.items():
        names = [n for n in named if n.startswith(prefix)]
        for name, grad in zip(names, torch.autograd.grad(loss, [named[n] for n in names], retain_graph=True)):
            expected[name] = before[name] - agent.config.lr * grad / (grad.abs() + 1e-8)
    total_grad = torch.autograd.grad(total, [named["critic.weights.0"]], allow_unused=True)[0]
    assert total_grad is not None  # the sum's critic gradient exists, and would include the actor loss's

    torch.manual_seed(3)
    agent.update(batch)
    after = agent.state_dict()
    for name, want in expected.items():
        torch.testing.assert_close(after[name], want, rtol=0, atol=1e-7, msg=name)
    sign_total = -agent.config.lr * torch.sign(total_grad)
    assert not torch.allclose(after["critic.weights.0"] - before["critic.weights.0"], sign_total, atol=1e-9)
    for name in (n for n in after if n.startswith("target_critic.")):
        online = before[name.replace("target_critic.", "critic.")]
        torch.testing.assert_close(after[name], before[name] + 0.005 * (online - before[name]), rtol=0, atol=1e-7)


# ---------------------------------------------------------------- expert files


def _expert_file(path: Path, hidden=(16,), seed: int = 0) -> Path:
    torch.manual_seed(seed)
    agent = SACAgent(SACConfig(actor_hidden_dims=hidden), OBS_DIM, ACTION_DIM)
    save_expert(path, *agent.actor.layers(), {"note": "untrained"})
    return path


def test_expert_file_round_trip_matches_the_torch_actor(tmp_path):
    torch.manual_seed(0)
    agent = SACAgent(SACConfig(actor_hidden_dims=(32, 32), actor_fc_scale=1.0), OBS_DIM, ACTION_DIM)
    path = save_expert(tmp_path / "e.npz", *agent.actor.layers(), {"steps": 7})
    expert = AntExpert.load(path)
    obs = np.random.default_rng(0).normal(size=(64, OBS_DIM))
    want = agent.actor.mode(torch.as_tensor(obs, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(expert.act(obs), want, atol=1e-5)
    np.testing.assert_allclose(expert.act(obs[3]), expert.act(obs)[3], rtol=0, atol=1e-12)
    assert expert.provenance == {"steps": 7}


def test_bad_expert_files_are_one_line_errors(tmp_path):
    with pytest.raises(ExpertError, match="not found"):
        AntExpert.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ExpertError, match="junk.npz: not a readable"):
        AntExpert.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ExpertError, match="format"):
        AntExpert.load(tmp_path / "other.npz")
    torch.manual_seed(0)
    small = SACAgent(SACConfig(actor_hidden_dims=(4,)), OBS, ACT)  # a 4-input, 2-action actor
    with pytest.raises(ExpertError, match="do not map 29 inputs to 8 actions"):
        AntExpert.load(save_expert(tmp_path / "small.npz", *small.actor.layers(), {}))


# ---------------------------------------------------------------- expert training


def _config(run_dir: Path, *overrides: str) -> ExpertConfig:
    data = {"run_dir": str(run_dir), "seed": 0, "env": {"max_episode_steps": 40}, "sac": dict(TINY_SAC),
            "train": {"steps": 100, "seed_steps": 30, "log_interval": 10, "eval_interval": 50, "eval_episodes": 1,
                      "checkpoint_interval": 50, "buffer_size": 1000}}
    return from_dict(ExpertConfig, apply_overrides(data, overrides), "test")


def _state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def _assert_same_run(a: Path, b: Path) -> None:
    """Bitwise: agent, optimizer, replay buffer, env and RNG states, expert weights, metrics but timings."""
    sa, sb = _state(a), _state(b)
    for key in ("agent", "buffer", "env"):
        for name, value in sa[key].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, sb[key][name]), f"{key}.{name}"
            else:
                assert value == sb[key][name], f"{key}.{name}"
    assert sa["numpy_rng"] == sb["numpy_rng"] and torch.equal(sa["torch_rng"], sb["torch_rng"])
    assert str(sa["optimizer"]) == str(sb["optimizer"])
    with np.load(a / "expert.npz") as ea, np.load(b / "expert.npz") as eb:
        assert all(np.array_equal(ea[k], eb[k]) for k in ea.files if k != "provenance")
    for stream in ("train", "eval"):
        ra, rb = read_csv(a / f"{stream}.csv"), read_csv(b / f"{stream}.csv")
        assert [list(r) for r in ra] == [list(r) for r in rb]
        values = [[np.array([v for k, v in r.items() if k != "steps_per_s"]) for r in rows] for rows in (ra, rb)]
        np.testing.assert_array_equal(*values)  # NaN (no finished episode yet) equals NaN here


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Run A: 100 steps straight (episodes of 40 steps, so checkpoints fall mid-episode)."""
    run = tmp_path_factory.mktemp("expert") / "A"
    assert train_expert(_config(run), progress=False) == run / "expert.npz"
    return run


def test_training_writes_metrics_expert_and_provenance(reference):
    rows = read_csv(reference / "train.csv")
    assert [r["step"] for r in rows] == list(range(30, 101, 10))  # rows once updates have started
    assert {"critic_loss", "actor_loss", "alpha_loss", "alpha", "episode_velocity", "steps_per_s"} <= set(rows[0])
    assert [r["step"] for r in read_csv(reference / "eval.csv")] == [50, 100]
    expert = AntExpert.load(reference / "expert.npz")
    prov = expert.provenance
    assert prov["steps"] == 100 and prov["seed"] == 0 and prov["config"]["sac"]["batch_size"] == 8
    assert prov["eval"]["velocity"] == read_csv(reference / "eval.csv")[-1]["velocity"]
    assert {"torch", "mujoco", "ogbench", "nfhiql"} <= set(prov["versions"])


def test_resume_after_a_crash_is_bitwise_identical(reference, tmp_path, monkeypatch):
    """A crash at step 66 (checkpoint at 50, rows up to 60 logged): the resumed run drops the lost rows
    and ends exactly as the uninterrupted one."""
    run = tmp_path / "B"
    real_add, calls = expert_module.ReplayBuffer.add, []

    def crash_at_66(self, *transition):
        calls.append(1)
        if len(calls) == 66:
            raise KeyboardInterrupt("simulated crash")
        real_add(self, *transition)

    monkeypatch.setattr(expert_module.ReplayBuffer, "add", crash_at_66)
    with pytest.raises(KeyboardInterrupt):
        train_expert(_config(run), progress=False)
    monkeypatch.undo()
    assert _state(run)["step"] == 50 and read_csv(run / "train.csv")[-1]["step"] == 60
    train_expert(_config(run), resume=True, progress=False)
    _assert_same_run(reference, run)


def test_resume_with_more_steps_continues_the_run(reference, tmp_path):
    run = tmp_path / "C"
    train_expert(_config(run, "train.steps=50"), progress=False)
    train_expert(_config(run), resume=True, progress=False)
    _assert_same_run(reference, run)


def test_resume_refuses_a_changed_recipe(reference, tmp_path):
    run = tmp_path / "D"
    train_expert(_config(run, "train.steps=50"), progress=False)
    with pytest.raises(ConfigError, match="'sac' differs"):
        train_expert(_config(run, "sac.lr=0.001"), resume=True, progress=False)
    with pytest.raises(ConfigError, match="train.seed_steps"):
        train_expert(_config(run, "train.seed_steps=20"), resume=True, progress=False)


def test_recipe_errors_name_the_file_and_key():
    main_recipe = "config/expert/ant-xy.yaml"
    cfg = expert_module.load_expert_config(main_recipe)
    assert cfg.sac == SACConfig() and cfg.train.steps == 400_000 and cfg.train.seed_steps == 10_000
    with pytest.raises(ConfigError, match=r"ant-xy.yaml: unknown key sac.lrate"):
        expert_module.load_expert_config(main_recipe, ["sac.lrate=1"])
    with pytest.raises(ConfigError, match=r"ant-xy.yaml: train: seed_steps must be >= 1"):
        expert_module.load_expert_config(main_recipe, ["train.seed_steps=0"])


# ---------------------------------------------------------------- antmaze datagen


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_antmaze_datagen_is_reproducible_and_loads_in_ogbench(tmp_path):
    expert = _expert_file(tmp_path / "expert.npz")
    steps = 25

    def run(name: str, seed: int = 0, workers: int = 1) -> Path:
        return generate_dataset("antmaze-medium-navigate", 2, seed, tmp_path / name, max_episode_steps=steps,
                                expert=expert, min_goal_rate=None, workers=workers, progress=False)

    first, again, pooled, other = run("a.npz"), run("b.npz"), run("c.npz", workers=2), run("d.npz", seed=1)
    assert _sha(first) == _sha(again) == _sha(pooled) != _sha(other)
    data = ogbench.load_dataset(str(first))
    assert data["observations"].shape == (2 * (steps - 1), 29) and data["actions"].shape == (2 * (steps - 1), 8)
    assert np.abs(data["actions"]).max() <= 1.0
    with np.load(first) as raw:
        assert raw["qpos"].shape == (2 * steps, 15) and raw["qvel"].shape == (2 * steps, 14)


def test_weak_expert_is_refused_and_nothing_is_written(tmp_path):
    expert = _expert_file(tmp_path / "expert.npz")
    out = tmp_path / "out.npz"
    with pytest.raises(ExpertError, match=r"expert.npz: expert too weak: 0 of the first 2 episodes reached a goal"):
        generate_dataset("antmaze-medium-navigate", 2, 0, out, max_episode_steps=10, expert=expert, progress=False)
    assert not out.exists()
    assert main(["datagen", "antmaze-medium-navigate", "--episodes", "2", "--max-episode-steps", "10",
                 "--expert", str(expert), "-o", str(out), "--quiet"]) == 2
    assert not out.exists()
    assert main(["datagen", "antmaze-medium-navigate", "--episodes", "2", "--max-episode-steps", "10",
                 "--expert", str(expert), "--allow-weak-expert", "-o", str(out), "--quiet"]) == 0
    assert np.load(out)["observations"].shape == (20, 29)


def test_expert_flag_is_required_for_ant_mazes_only(tmp_path):
    with pytest.raises(ConfigError, match="needs --expert"):
        generate_dataset("antmaze-medium-navigate", 1, 0, tmp_path / "x.npz", progress=False)
    with pytest.raises(ConfigError, match="takes no --expert"):
        generate_dataset("pointmaze-medium-navigate", 1, 0, tmp_path / "x.npz", expert=tmp_path / "e.npz",
                         progress=False)
    with pytest.raises(ExpertError, match="not found"):
        generate_dataset("antmaze-medium-navigate", 1, 0, tmp_path / "x.npz", expert=tmp_path / "e.npz",
                         progress=False)
