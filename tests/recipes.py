"""Tiny datasets and recipes shared by the training and CLI tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

TINY_AGENT = {"actor_hidden_dims": [16], "value_hidden_dims": [16], "flow_hidden_dims": [16],
              "flow_encode_dim": 8, "flow_blocks": 2, "subgoal_steps": 5}


def make_dataset(path: Path, n_traj: int = 10, length: int = 50, seed: int = 0, nan_at: int | None = None) -> Path:
    """A 2-D random walk in OGBench's raw layout (terminals = 1 at each trajectory's last observation)."""
    rng = np.random.default_rng(seed)
    obs = np.cumsum(rng.normal(0.0, 0.1, (n_traj, length, 2)), axis=1).reshape(-1, 2).astype(np.float32)
    if nan_at is not None:
        obs[nan_at, 1] = np.nan
    actions = rng.uniform(-1.0, 1.0, (n_traj * length, 2)).astype(np.float32)
    terminals = np.zeros((n_traj, length), np.float32)
    terminals[:, -1] = 1.0
    np.savez(path, observations=obs, actions=actions, terminals=terminals.reshape(-1))
    return path


def write_recipe(path: Path, run_dir: Path, dataset: Path, log_interval: int = 10, **train_overrides) -> Path:
    """A tiny training recipe (no evaluation env) written to `path`."""
    recipe = {"run_dir": str(run_dir), "env": None, "seed": 0, "dataset": {"path": str(dataset)},
              "agent": dict(TINY_AGENT),
              "sampler": {"value_p_curgoal": 0.2, "value_p_trajgoal": 0.5, "value_p_randomgoal": 0.3},
              "train": {"steps": 40, "batch_size": 16, "log_interval": log_interval, "checkpoint_interval": 10,
                        "threads": 1, **train_overrides}}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
