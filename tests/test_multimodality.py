"""`nfhiql modes`: the situation finder on a dataset with a known fork, policy sampling, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nfhiql_core.algo.agent import AgentConfig, HIQLAgent
from nfhiql_core.analysis.multimodality import find_situations, sample_policy, two_means
from nfhiql_core.cli import main
from nfhiql_core.config import to_dict
from nfhiql_core.data.dataset import load_dataset
from nfhiql_core.training.checkpoint import save_checkpoint

K = 5  # subgoal_steps of the tiny agents


def fork_dataset(path: Path, n_traj: int = 40, sides: tuple[int, ...] = (1, -1), seed: int = 0,
                 extra_dims: int = 0) -> Path:
    """Trajectories from (0, 0) to (10, 0) around an obstacle: half pass (5, +3), half (5, −3).

    20 steps per leg, then 10 steps dwelling at the goal; `extra_dims` noise-only coordinates are
    appended to observations and actions. Raw OGBench layout (terminal at the last step).
    """
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, 21)[:, None]
    trajectories, actions = [], []
    for n in range(n_traj):
        mid = np.array([5.0, 3.0 * sides[n % len(sides)]])
        path_xy = np.concatenate([t[:-1] * mid, mid + t * (np.array([10.0, 0.0]) - mid), np.full((10, 2), [10.0, 0.0])])
        path_xy = np.concatenate([path_xy, np.zeros((len(path_xy), extra_dims))], axis=1)
        obs = path_xy + rng.normal(0.0, 0.03, path_xy.shape)
        trajectories.append(obs)
        actions.append(np.clip(np.diff(obs, axis=0, append=obs[-1:]) / 0.4, -1.0, 1.0))
    obs = np.concatenate(trajectories).astype(np.float32)
    terminals = np.zeros(len(obs), np.float32)
    terminals[np.cumsum([len(o) for o in trajectories]) - 1] = 1.0
    np.savez(path, observations=obs, actions=np.concatenate(actions).astype(np.float32), terminals=terminals)
    return path


def tiny_agent(policy: str, subgoal_space: str = "rep", obs_dim: int = 2, action_dim: int = 2) -> HIQLAgent:
    torch.manual_seed(0)
    config = AgentConfig(policy=policy, subgoal_space=subgoal_space, actor_hidden_dims=(16,),
                         value_hidden_dims=(16,), flow_hidden_dims=(16,), flow_encode_dim=8, flow_blocks=2,
                         rep_dim=4, subgoal_steps=K)
    return HIQLAgent(config, obs_dim, action_dim)


def tiny_checkpoint(path: Path, policy: str, obs_dim: int = 2, env: str | None = "fork") -> Path:
    agent = tiny_agent(policy, obs_dim=obs_dim, action_dim=obs_dim)
    save_checkpoint(path, agent, {"env": env, "agent": to_dict(agent.config)}, 0, np.random.default_rng(0))
    return path


def test_two_means_separates_two_blobs_and_not_one():
    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal([0, 3], 0.2, (300, 2)), rng.normal([0, -3], 0.2, (100, 2))])
    split = two_means(blobs)
    assert sorted(split.fractions.tolist()) == [0.25, 0.75]
    assert split.separation == pytest.approx(6.0, abs=0.1) and split.ratio > 15
    assert two_means(rng.normal(0, 1, (2000, 2))).ratio < 2  # a unimodal Gaussian scores ≈ 1.4


def test_finder_finds_the_fork_and_its_two_branches(tmp_path):
    dataset = load_dataset(str(fork_dataset(tmp_path / "fork.npz")))
    situations, scale = find_situations(dataset, K, 3, seed=0, dims=[0, 1])
    assert situations, "the fork was not found"
    for situation in situations:  # only the start is bimodal: each branch alone is one way
        assert np.linalg.norm(situation.state) < 1.0
        assert np.linalg.norm(situation.goal - [10.0, 0.0]) < 1.0
    fork = situations[0]
    centres = fork.modes.centres[np.argsort(fork.modes.centres[:, 1])]
    assert centres[0, 1] < -0.4 and centres[1, 1] > 0.4  # one mode per side of the obstacle
    assert fork.modes.fractions.min() >= 0.3
    branch = np.sign(fork.subgoals[:, 1])
    assert (branch == np.where(fork.modes.labels == np.argmax(fork.modes.centres[:, 1]), 1, -1)).all()
    assert (np.sign(fork.action_modes()[:, 1]) == np.sign(fork.modes.centres[:, 1])).all()
    assert 1.0 < scale < 2.0  # five steps of ≈ 0.29


def test_finder_finds_nothing_where_every_trajectory_takes_the_same_way(tmp_path):
    dataset = load_dataset(str(fork_dataset(tmp_path / "one_way.npz", sides=(1,))))
    assert find_situations(dataset, K, 3, seed=0, dims=[0, 1])[0] == []


@pytest.mark.parametrize("policy,subgoal_space", [("flow", "rep"), ("gaussian", "rep"), ("flow", "state")])
def test_sample_policy_shapes_decoding_and_determinism(tmp_path, policy, subgoal_space):
    dataset = load_dataset(str(fork_dataset(tmp_path / "fork.npz")))
    fork = find_situations(dataset, K, 1, seed=0, dims=[0, 1])[0][0]
    agent = tiny_agent(policy, subgoal_space).eval()
    pool = np.array(dataset.observations[::3])
    draw = [sample_policy(agent, fork, pool, 64, [0, 1], torch.Generator().manual_seed(1)) for _ in range(2)]
    samples = draw[0]
    assert samples.subgoals.shape == (64, 2) and samples.subgoal_z0.shape == (2,)
    assert samples.actions.shape == (64, 2) and np.abs(samples.actions).max() <= 1.0
    assert np.array_equal(samples.subgoals, draw[1].subgoals) and np.array_equal(samples.actions, draw[1].actions)
    if subgoal_space == "rep":  # decoded to pool states
        pool_rows = {tuple(row) for row in pool.tolist()}
        assert all(tuple(row) in pool_rows for row in samples.subgoals.tolist())
        assert samples.decode_error is not None and samples.decode_error >= 0.0
    else:
        assert samples.decode_error is None


def test_cli_writes_figure_and_json_and_refuses_to_overwrite(tmp_path, capsys):
    data = fork_dataset(tmp_path / "fork.npz")
    flow, gaussian = tiny_checkpoint(tmp_path / "flow.pt", "flow"), tiny_checkpoint(tmp_path / "g.pt", "gaussian")
    png, out = tmp_path / "fig" / "modes.png", tmp_path / "fig" / "modes.json"
    argv = ["modes", str(flow), str(gaussian), "--dataset", str(data), "-o", str(png), "--json", str(out),
            "--samples", "50", "--states", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "#1 s=(" in printed and "flow     high:" in printed and "gaussian high:" in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(out.read_text())
    assert {"dataset", "criterion", "finder", "subgoal_steps", "samples", "situations"} <= set(report)
    assert report["subgoal_steps"] == K and report["samples"] == 50
    situation = report["situations"][0]
    data_keys = {"neighbors", "modes", "fractions", "ratio", "median_steps_to_goal", "action_modes"}
    assert data_keys <= set(situation["data"])
    for name in ("flow", "gaussian"):
        high, low = situation[name]["high"], situation[name]["low"]
        assert len(high["mode_fractions"]) == 3 and sum(high["mode_fractions"]) == pytest.approx(1.0, abs=1e-3)
        assert len(low["mode_fractions"]) == 2 and low["spread"] >= 0.0
        assert isinstance(high["bimodal"], bool) and high["subgoal_z0_mode"] in ("A", "B")

    assert main(argv) == 2  # exists, no --force
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    capsys.readouterr()
    assert json.loads(out.read_text())["situations"] == report["situations"]  # deterministic given --seed


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("nfhiql: error: ") and err.count("\n") == 1, repr(err)
    return err


@pytest.mark.parametrize("case", ["swapped", "obs_dim", "missing_checkpoint", "missing_dataset", "no_fork"])
def test_cli_errors_are_one_line(tmp_path, capsys, case):
    data = fork_dataset(tmp_path / "fork.npz")
    flow, gaussian = tiny_checkpoint(tmp_path / "flow.pt", "flow"), tiny_checkpoint(tmp_path / "g.pt", "gaussian")
    needles = {"swapped": [str(gaussian), "expected a flow-policy checkpoint"],
               "obs_dim": [str(tmp_path / "flow3.pt"), "do not match", str(data)],
               "missing_checkpoint": [str(tmp_path / "nope.pt"), "not found"],
               "missing_dataset": [str(tmp_path / "nope.npz"), "not found"],
               "no_fork": ["no (state, goal) with two distinct ways forward"]}[case]
    checkpoints = {"swapped": [gaussian, flow],
                   "obs_dim": [tiny_checkpoint(tmp_path / "flow3.pt", "flow", 3), gaussian],
                   "missing_checkpoint": [tmp_path / "nope.pt", gaussian]}.get(case, [flow, gaussian])
    dataset = {"missing_dataset": tmp_path / "nope.npz",
               "no_fork": fork_dataset(tmp_path / "one_way.npz", sides=(1,))}.get(case, data)
    png = tmp_path / "modes.png"
    assert main(["modes", *map(str, checkpoints), "--dataset", str(dataset), "-o", str(png), "--samples", "8"]) == 2
    err = one_line_error(capsys)
    for needle in needles:
        assert needle in err, (needle, err)
    assert not png.exists()


def test_cli_projects_higher_dimensional_observations_onto_the_first_two_dims(tmp_path, capsys):
    data = fork_dataset(tmp_path / "fork3.npz", extra_dims=1)
    flow, gaussian = tiny_checkpoint(tmp_path / "f.pt", "flow", 3), tiny_checkpoint(tmp_path / "g.pt", "gaussian", 3)
    out = tmp_path / "modes.json"
    argv = ["modes", str(flow), str(gaussian), "--dataset", str(data), "-o", str(tmp_path / "modes.png"),
            "--json", str(out), "--samples", "20", "--states", "1"]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["dims"] == [0, 1, 2] and len(report["situations"][0]["data"]["modes"][0]) == 3
    assert main([*argv[:-4], "--dims", "0", "7", "--force"]) == 2
    assert "--dims" in one_line_error(capsys)
