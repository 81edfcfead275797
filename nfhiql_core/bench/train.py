"""`nfhiql bench train`: gradient steps per second of the real training step (goal sampling +
host→device copy + one agent update), flow vs Gaussian policies, for each given recipe; under torchrun
(`--nproc N`) the DDP step of N processes sharing each global batch, timed and printed by rank 0."""
from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from nfhiql_core.algo.agent import HIQLAgent
from nfhiql_core.algo.precision import autocast_dtype, bf16_capability
from nfhiql_core.data.dataset import Dataset, load_dataset
from nfhiql_core.data.goal_sampler import HierarchicalGoalSampler
from nfhiql_core.errors import DatasetError
from nfhiql_core.evaluation.episodes import make_env
from nfhiql_core.training.distributed import World, seed_rank
from nfhiql_core.training.train import TrainConfig, load_train_config


def synthetic_dataset(obs_dim: int = 2, action_dim: int = 2, trajectories: int = 100, length: int = 1001,
                      seed: int = 0) -> Dataset:
    """Random-walk trajectories in OGBench's layout, for benchmarking without a generated dataset."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(scale=0.1, size=(trajectories, length, obs_dim)).astype(np.float32)
    observations = np.cumsum(steps, axis=1).reshape(-1, obs_dim)
    actions = rng.uniform(-1, 1, size=(trajectories * length, action_dim)).astype(np.float32)
    terminals = np.zeros(trajectories * length, dtype=np.float32)
    terminals[length - 1:: length] = 1.0
    return Dataset.from_arrays(observations, actions, terminals, source="<synthetic random walk>")


def time_updates(config: TrainConfig, dataset: Dataset, steps: int, warmup: int, device: torch.device,
                 world: World = World()) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) per training step, averaged over `steps` after `warmup`
    untimed steps (this rank's shard of each global batch under DDP, in a process group `world` has joined).
    CPU time counts all the process's threads and none of the time it waited for a core, so on a machine
    that other jobs share it is the steadier measure of a CPU step's cost."""
    torch.manual_seed(config.seed)
    sampler = HierarchicalGoalSampler(dataset, config.sampler_config())
    agent = HIQLAgent(config.agent, dataset.obs_dim, dataset.action_dim, config.train.steps).to(device)
    rng = seed_rank(config.seed, world.rank)
    shard = world.shard_size(config.train.batch_size)
    forward = world.wrap(agent, device)

    def step() -> None:
        agent.update(agent.batch_to_tensors(sampler.sample(shard, rng)), forward)

    for _ in range(warmup):
        step()
    _synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    _synchronize(device)
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu_start) / steps


def bench_train(config_paths: Sequence[str], steps: int = 30, warmup: int = 3, threads: int = 0,
                device: str = "auto", compute_dtypes: Sequence[str] = ("float32",)) -> list[dict]:
    """Print and return a throughput table: each recipe × compute dtype × {flow, gaussian} (rank 0 prints and
    returns it under torchrun; the other ranks return an empty list)."""
    world = World.from_env()
    say = print if world.is_main else _silent
    if threads > 0:
        torch.set_num_threads(threads)
    dev = world.device(device)
    world.join(dev)
    try:
        say(f"device {dev} ({bf16_capability(dev)}), torch {torch.__version__}, threads {torch.get_num_threads()} "
            f"× {world.size} process(es), {steps} timed steps after {warmup} warm-up")
        say(f"{'recipe':<34} {'dtype':<13} {'policy':<9} {'procs':>5} {'batch':>5} {'actor/value MLP':>17} "
            f"{'steps/s':>8} {'ms/step':>8} {'cpu ms':>8}")
        rows = []
        for path in config_paths:
            config = load_train_config(path)
            dataset = _dataset_for(config, say)
            for dtype, policy in itertools.product(compute_dtypes, ("flow", "gaussian")):
                agent = dataclasses.replace(config.agent, policy=policy, compute_dtype=dtype)
                cfg = dataclasses.replace(config, agent=agent)
                seconds, cpu_seconds = time_updates(cfg, dataset, steps, warmup, dev, world)
                ran = "float32" if autocast_dtype(dtype, dev) is None else "bfloat16"
                row = {"recipe": Path(path).stem, "compute_dtype": dtype, "ran_as": ran, "policy": policy,
                       "processes": world.size,
                       "batch_size": cfg.train.batch_size,
                       "actor_hidden_dims": list(cfg.agent.actor_hidden_dims),
                       "value_hidden_dims": list(cfg.agent.value_hidden_dims),
                       "steps_per_s": 1.0 / seconds, "cpu_ms_per_step": 1000 * cpu_seconds,
                       "dataset": dataset.source}
                rows.append(row)
                nets = f"{_dims(cfg.agent.actor_hidden_dims)}/{_dims(cfg.agent.value_hidden_dims)}"
                shown = dtype if dtype == ran else f"{dtype}→{ran}"
                say(f"{row['recipe']:<34} {shown:<13} {policy:<9} {world.size:>5} {row['batch_size']:>5} {nets:>17} "
                    f"{row['steps_per_s']:>8.2f} {1000 * seconds:>8.1f} {row['cpu_ms_per_step']:>8.1f}")
                if policy == "gaussian":  # the flow row came just before: its step's cost relative to this one
                    say(f"{'':<34} flow step cost / Gaussian step cost: "
                        f"{row['steps_per_s'] / rows[-2]['steps_per_s']:.2f}x "
                        f"(CPU time: {rows[-2]['cpu_ms_per_step'] / row['cpu_ms_per_step']:.2f}x)")
        say("(OGBench's JAX HIQL side by side: benchmarks/jax_hiql_step.py, in the same run)")
    finally:
        world.leave()
    return rows if world.is_main else []


def _dataset_for(config: TrainConfig, say: Callable[[str], None]) -> Dataset:
    """The recipe's dataset, or where it was not generated on this machine a synthetic one of its env's shapes."""
    try:
        return load_dataset(config.dataset.path)
    except DatasetError:
        env = make_env(config.env)
        obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
        env.close()
        dataset = synthetic_dataset(obs_dim, action_dim)
        say(f"  ({config.dataset.path} not found: using {dataset.source} of {config.env}'s shapes, obs {obs_dim} / "
            f"act {action_dim})")
        return dataset


def _silent(*_: object) -> None:
    """`print` of ranks other than 0."""


def _dims(dims: Sequence[int]) -> str:
    return f"{len(dims)}x{dims[0]}" if len(set(dims)) == 1 else "-".join(map(str, dims))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
