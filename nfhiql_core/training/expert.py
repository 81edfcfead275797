"""`nfhiql expert ant`: train the directional ant expert (SAC on online-ant-xy-v0) as OGBench does,
resumably, and save it as a small expert file for `nfhiql datagen antmaze-…`.

Loop (OGBench's data_gen_scripts/main_sac.py): at step i = 1…steps, act uniformly at random while
i < seed_steps, else sample from the policy; store the transition (mask 0 only on termination);
reset at termination or truncation; once the buffer holds seed_steps transitions, one SAC update
per step. The policy's directional velocity (deterministic actions, m/s along the commanded
direction) is evaluated every eval_interval steps and at the end.

A checkpoint (atomic, every checkpoint_interval steps and at the end) holds the agent, optimizer,
replay buffer, environment state and every RNG, so `--resume` continues bitwise as the
uninterrupted run would (same machine, same thread count); metrics rows logged after the
checkpoint are dropped on resume.
"""
from __future__ import annotations

import importlib.metadata
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import yaml
from tqdm import tqdm

from nfhiql_core import __version__
from nfhiql_core.algo.sac import SACAgent, SACConfig
from nfhiql_core.atomic_io import atomic_open
from nfhiql_core.config import apply_overrides, from_dict, load_yaml, to_dict
from nfhiql_core.data.ant_expert import AntExpert, save_expert
from nfhiql_core.errors import ConfigError
from nfhiql_core.training.ant_xy import ENV_NAME, AntXYConfig, DirectionalAnt
from nfhiql_core.training.checkpoint import read_state
from nfhiql_core.training.metrics import MetricsLogger
from nfhiql_core.training.replay import ReplayBuffer
from nfhiql_core.training.train import CHECKPOINT_NAME, check_run_dir, prepare_run_dir, resolve_device

EXPERT_NAME = "expert.npz"
FORMAT = "nfhiql-expert-checkpoint/1"
_VERSIONED = ("numpy", "torch", "mujoco", "gymnasium", "ogbench")


@dataclass(frozen=True)
class ExpertLoopConfig:
    """The online loop (defaults: OGBench's run for the ant expert, main_sac.py and commands.sh)."""

    steps: int = 400_000  # environment steps (--train_steps); updates = steps − seed_steps + 1
    seed_steps: int = 10_000  # uniformly random actions before the policy acts; updates start at this many
    buffer_size: int = 1_000_000  # replay capacity (never full in a 400k-step run)
    log_interval: int = 5000  # steps between train.csv rows
    eval_interval: int = 100_000  # steps between velocity evaluations (0: only the final one)
    eval_episodes: int = 50  # episodes per evaluation
    checkpoint_interval: int = 10_000  # steps between checkpoints (each holds the replay buffer)
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    threads: int = 1  # torch intra-op threads (0: torch's default)

    def __post_init__(self) -> None:
        for name in ("steps", "seed_steps", "buffer_size", "log_interval", "eval_episodes", "checkpoint_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.eval_interval < 0 or self.threads < 0:
            raise ValueError("eval_interval and threads must be >= 0")


@dataclass(frozen=True)
class ExpertConfig:
    """An expert-training recipe: where the run lives, the task, SAC and the loop."""

    run_dir: str
    seed: int = 0
    env: AntXYConfig = field(default_factory=AntXYConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    train: ExpertLoopConfig = field(default_factory=ExpertLoopConfig)


def load_expert_config(path: str | Path, overrides: Sequence[str] = ()) -> ExpertConfig:
    """Read a YAML recipe, apply `key.sub=value` overrides and validate it into an ExpertConfig."""
    return from_dict(ExpertConfig, apply_overrides(load_yaml(path), overrides), str(path))


def evaluate_velocity(expert: AntExpert, env_config: AntXYConfig, episodes: int, seed: int) -> dict[str, float]:
    """Run the deterministic expert for `episodes` episodes on fresh directions: mean velocity along the
    direction (m/s), the worst episode's, mean return and mean length (shorter than the limit: it fell)."""
    env = DirectionalAnt(env_config, seed)
    velocities, returns, lengths = [], [], []
    for _ in range(episodes):
        ob, done = env.reset(), False
        while not done:
            out = env.step(expert.act(ob))
            ob, done = out.observation, out.terminated or out.truncated
        velocities.append(env.velocity())
        returns.append(env.episode_return)
        lengths.append(env.steps)
    return {"velocity": float(np.mean(velocities)), "velocity_min": float(np.min(velocities)),
            "return": float(np.mean(returns)), "length": float(np.mean(lengths))}


def train_expert(config: ExpertConfig, resume: bool = False, force: bool = False, progress: bool = True) -> Path:
    """Run (or resume) expert training; returns the path of the expert file written at the end."""
    run_dir, loop = Path(config.run_dir), config.train
    ckpt_path = run_dir / CHECKPOINT_NAME
    replace = check_run_dir(run_dir, resume, force)
    if loop.threads > 0:
        torch.set_num_threads(loop.threads)
    device = resolve_device(loop.device)
    torch.manual_seed(config.seed)
    agent = SACAgent(config.sac, DirectionalAnt.obs_dim, DirectionalAnt.action_dim).to(device)
    env_seed, rng_seed = (int(s) for s in np.random.SeedSequence(config.seed).generate_state(2))
    env = DirectionalAnt(config.env, env_seed)
    buffer = ReplayBuffer(loop.buffer_size, env.obs_dim, env.action_dim)
    rng = np.random.default_rng(rng_seed)
    prepare_run_dir(run_dir, replace)
    start, last_episode = 0, {"episode_return": math.nan, "episode_velocity": math.nan}
    if resume and ckpt_path.exists():
        start, last_episode = _restore(ckpt_path, config, agent, buffer, env, rng, device)
        ob = env.observation()
    else:
        ob = env.reset()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))

    metrics = MetricsLogger(run_dir, resume_step=start if resume else None)
    bar = tqdm(total=loop.steps, initial=start, disable=not progress, desc="expert ant", dynamic_ncols=True)
    tick, tick_step, info = time.perf_counter(), start, None
    expert_path = run_dir / EXPERT_NAME
    for step in range(start + 1, loop.steps + 1):
        action = (rng.uniform(-1.0, 1.0, env.action_dim) if step < loop.seed_steps else agent.sample_action(ob))
        out = env.step(action)
        buffer.add(ob, action, out.reward, float(not out.terminated), out.observation)
        ob = out.observation
        if out.terminated or out.truncated:
            last_episode = {"episode_return": env.episode_return, "episode_velocity": env.velocity()}
            ob = env.reset()
        if buffer.size >= loop.seed_steps:
            batch = buffer.sample(config.sac.batch_size, rng)
            info = agent.update({k: torch.from_numpy(v).to(device) for k, v in batch.items()})
        bar.update(1)
        if step % loop.log_interval == 0 and info is not None:
            now = time.perf_counter()
            values = {**{k: v.item() for k, v in info.items()}, **last_episode,
                      "steps_per_s": (step - tick_step) / (now - tick)}
            tick, tick_step = now, step
            metrics.log("train", step, values)
            bar.set_postfix(velocity=f"{values['episode_velocity']:.2f}", sps=f"{values['steps_per_s']:.0f}")
        if step == loop.steps or (loop.eval_interval and step % loop.eval_interval == 0):
            result = evaluate_velocity(_expert_of(agent, f"step {step}"), config.env, loop.eval_episodes,
                                       _eval_seed(config.seed, step))
            metrics.log("eval", step, result)
            if progress:
                tqdm.write(f"step {step}: velocity {result['velocity']:.3f} m/s (worst {result['velocity_min']:.3f})")
            if step == loop.steps:
                _write_expert(expert_path, agent, config, step, result)
        if step % loop.checkpoint_interval == 0 or step == loop.steps:
            _save(ckpt_path, config, step, agent, buffer, env, rng, last_episode)
    bar.close()
    metrics.close()
    return expert_path


def _eval_seed(seed: int, step: int) -> int:
    """Evaluation episodes depend on (seed, step) only, never on the training RNGs."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def _expert_of(agent: SACAgent, source: str) -> AntExpert:
    """The agent's current deterministic actor, as the expert file would hold it."""
    hidden, mean = agent.actor.layers()
    return AntExpert.from_layers(hidden, mean, {}, source)


def _write_expert(path: Path, agent: SACAgent, config: ExpertConfig, step: int, result: dict[str, float]) -> None:
    hidden, mean = agent.actor.layers()
    provenance = {
        "trained_on": ENV_NAME, "algorithm": "SAC (OGBench impls/agents/sac.py)", "steps": step,
        "seed": config.seed, "config": to_dict(config),
        "eval": {"episodes": config.train.eval_episodes, **result},
        "observation": "ant qpos[2:] (13), qvel (14), unit x-y direction (2)",
        "policy": "tanh(mean): GELU (tanh approximation) hidden layers, no observation normalisation",
        "versions": {"nfhiql": __version__, "python": platform.python_version(),
                     **{name: importlib.metadata.version(name) for name in _VERSIONED}},
    }
    save_expert(path, hidden, mean, provenance)


def _save(path: Path, config: ExpertConfig, step: int, agent: SACAgent, buffer: ReplayBuffer,
          env: DirectionalAnt, rng: np.random.Generator, last_episode: dict[str, float]) -> None:
    """Atomically write the whole training state at `step`."""
    env_state = env.get_state()
    state = {
        "format": FORMAT, "step": step, "config": to_dict(config),
        "agent": agent.state_dict(), "optimizer": agent.optimizer.state_dict(),
        "buffer": buffer.state(),
        "env": {**env_state, "sim": torch.from_numpy(env_state["sim"]),
                "direction": torch.from_numpy(env_state["direction"])},
        "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "last_episode": last_episode,
    }
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def _restore(path: Path, config: ExpertConfig, agent: SACAgent, buffer: ReplayBuffer, env: DirectionalAnt,
             rng: np.random.Generator, device: torch.device) -> tuple[int, dict[str, float]]:
    """Load a checkpoint into the run's objects; returns (step, last finished episode's stats)."""
    state = read_state(path, FORMAT, "an expert checkpoint", device)
    saved, current = state["config"], to_dict(config)
    for key in ("seed", "env", "sac"):
        if saved[key] != current[key]:
            raise ConfigError(f"{path}: cannot resume: '{key}' differs from the checkpoint's recipe")
    for key in ("seed_steps", "buffer_size"):
        if saved["train"][key] != current["train"][key]:
            raise ConfigError(f"{path}: cannot resume: 'train.{key}' differs from the checkpoint's recipe")
    agent.load_state_dict(state["agent"])
    agent.optimizer.load_state_dict(state["optimizer"])
    buffer.load_state(state["buffer"])
    env.set_state({**state["env"], "sim": state["env"]["sim"].numpy(),
                   "direction": state["env"]["direction"].numpy()})
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"].cpu())
    return state["step"], state["last_episode"]
