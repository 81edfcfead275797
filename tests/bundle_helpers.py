"""Shared by test_export.py and test_runtime.py: small go-to-goal agents fitted in-process on
pointmaze-shaped data (2-D obs, 2-D actions), their checkpoints and bundles, built once per session.

Flow agents use rep subgoals (target: the goal direction, length-normalised), Gaussian agents
state subgoals (target: a point ≤ 2 units towards the goal); the low level moves towards the
subgoal. A few hundred steps suffice to solve pointmaze's open tasks in ~150 steps.
"""
from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from nfhiql_core.algo.agent import AgentConfig, HIQLAgent
from nfhiql_core.algo.networks import length_normalize
from nfhiql_core.deploy.bundle import sealed
from nfhiql_core.training.checkpoint import save_checkpoint
from nfhiql_core.training.export import export_bundle
from nfhiql_core.training.train import DatasetConfig, TrainConfig

MAZE = "pointmaze-medium-navigate"
KINDS = [("flow", "rep"), ("gaussian", "state")]
_ROOT = Path(tempfile.mkdtemp(prefix="nfhiql-bundle-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)


def _targets(space: str, obs: torch.Tensor, goals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    subgoals = length_normalize(goals - obs) if space == "rep" else obs + (goals - obs).clamp(-2, 2)
    actions = (subgoals if space == "rep" else subgoals - obs).clamp(-1, 1)
    return subgoals, actions


@functools.cache
def recipe(policy: str, space: str) -> TrainConfig:
    agent = AgentConfig(policy=policy, subgoal_space=space, actor_hidden_dims=(64, 64), value_hidden_dims=(8,),
                        flow_hidden_dims=(32, 32), flow_encode_dim=16, flow_blocks=2, rep_dim=2, subgoal_steps=10)
    return TrainConfig(run_dir="unused", dataset=DatasetConfig(path="unused.npz"), env=MAZE, agent=agent)


@functools.cache
def fitted_agent(policy: str, space: str, steps: int = 300) -> HIQLAgent:
    """Both actors fitted by maximum likelihood to go-to-goal targets (do not modify the result)."""
    torch.manual_seed(0)
    agent = HIQLAgent(recipe(policy, space).agent, 2, 2)
    actors = [*agent.high_actor.parameters(), *agent.low_actor.parameters()]
    optimizer = torch.optim.Adam(actors, lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        obs, goals = (torch.rand(256, 2, generator=generator) * 24 - 2 for _ in range(2))
        subgoals, actions = _targets(space, obs, goals)
        loss = -(agent.high_actor.log_prob(subgoals, torch.cat([obs, goals], -1)).mean()
                 + agent.low_actor.log_prob(actions, torch.cat([obs, subgoals], -1)).mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return agent.eval()


@functools.cache
def exported(policy: str, space: str) -> tuple[Path, Path]:
    """(checkpoint, bundle dir) of the fitted agent (shared: copy before modifying)."""
    checkpoint = _ROOT / f"{policy}-{space}.pt"
    save_checkpoint(checkpoint, fitted_agent(policy, space), recipe(policy, space), 300, np.random.default_rng(0))
    bundle = _ROOT / f"{policy}-{space}-bundle"
    export_bundle(checkpoint, bundle)
    return checkpoint, bundle


def bundle_copy(tmp_path: Path, policy: str = "flow", space: str = "rep") -> Path:
    """A private copy of an exported bundle, for tests that damage it."""
    return Path(shutil.copytree(exported(policy, space)[1], tmp_path / "bundle"))


def edit_metadata(bundle: Path, reseal: bool = True, **changes) -> None:
    """Change bundle.json's values; `reseal` updates its checksum (a deliberately made bad bundle)."""
    path = bundle / "bundle.json"
    data = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(sealed(data) if reseal else data))
