"""Offline training: dataset → goal sampler → agent updates, with periodic evaluation,
metrics (CSV + TensorBoard), atomic checkpoints and crash-safe resume; one process, or one per device
under torchrun (`nfhiql_core.training.distributed`)."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from nfhiql_core.algo.agent import AgentConfig, HIQLAgent, TorchPolicy
from nfhiql_core.atomic_io import save_json
from nfhiql_core.config import apply_overrides, from_dict, load_yaml, to_dict
from nfhiql_core.data.dataset import Dataset, dataset_sha256, load_dataset
from nfhiql_core.data.goal_sampler import GoalSamplerConfig, HierarchicalGoalSampler
from nfhiql_core.errors import ConfigError, OutputExistsError
from nfhiql_core.training.checkpoint import Checkpoint, load_checkpoint, restore_rng, rng_state, save_checkpoint
from nfhiql_core.training.distributed import World, seed_rank
from nfhiql_core.training.metrics import MetricsLogger

CHECKPOINT_NAME = "checkpoint.pt"
DATASET_RECORD = "dataset.json"  # {"path", "sha256"} of the dataset a run was trained on (`dataset_sha256`)
# A thread count written here while a single-process run trains raises its torch threads at the next log
# step (never lowers them); the run then renames it to THREADS_APPLIED. The grid runner uses it to hand the
# cores of finished runs to those still training.
THREADS_REQUEST = "threads.request"
THREADS_APPLIED = "threads.applied"
# Sampler knobs that live in the agent section (one home each).
_SAMPLER_KEYS_FROM_AGENT = ("discount", "subgoal_steps")


@dataclass(frozen=True)
class DatasetConfig:
    path: str
    data_fraction: float = 1.0


@dataclass(frozen=True)
class LoopConfig:
    steps: int = 1_000_000
    batch_size: int = 1024
    log_interval: int = 1000
    eval_interval: int = 100_000  # 0 disables periodic evaluation
    eval_start: int = 0  # no periodic evaluation before this step (the final step is always evaluated)
    eval_episodes: int = 50  # per task
    eval_temperature: float = 0.0
    # Value-guided subgoals at evaluation: the best of z = 0 and N − 1 draws by V(subgoal, goal); needs
    # agent.subgoal_space: state. In-process evaluation only (`nfhiql eval` of a checkpoint), not in ONNX bundles.
    eval_subgoal_candidates: int = 1
    checkpoint_interval: int = 10_000
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_interval", "checkpoint_interval", "eval_episodes",
                     "eval_subgoal_candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.eval_interval < 0 or self.eval_start < 0:
            raise ValueError("eval_interval and eval_start must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe: what to train on, how, and where the run lives."""

    run_dir: str
    dataset: DatasetConfig
    env: str | None = None  # OGBench environment for periodic evaluation
    seed: int = 0
    agent: AgentConfig = field(default_factory=AgentConfig)
    sampler: dict[str, Any] = field(default_factory=dict)  # GoalSamplerConfig fields but discount/subgoal_steps
    train: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self) -> None:
        if self.agent.lr_scheduled and self.agent.lr_warmup_steps >= self.train.steps:
            raise ValueError(f"agent.lr_warmup_steps ({self.agent.lr_warmup_steps}) must be < train.steps "
                             f"({self.train.steps})")
        if self.train.eval_subgoal_candidates > 1 and self.agent.subgoal_space != "state":
            raise ValueError("train.eval_subgoal_candidates > 1 needs agent.subgoal_space: state "
                             "(V cannot score a rep-space subgoal)")

    def sampler_config(self, source: str = "config") -> GoalSamplerConfig:
        """The goal sampler's config, with discount and subgoal_steps taken from the agent.

        `source` (the recipe's file name) prefixes error messages.
        """
        shared = set(_SAMPLER_KEYS_FROM_AGENT) & set(self.sampler)
        if shared:
            raise ConfigError(f"{source}: sampler.{sorted(shared)[0]}: set it in the agent section instead")
        values = {**self.sampler, **{k: getattr(self.agent, k) for k in _SAMPLER_KEYS_FROM_AGENT}}
        config = from_dict(GoalSamplerConfig, values, source, "sampler.")
        try:
            config.validate()
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        return config


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML recipe, apply `key.sub=value` overrides and validate it into a TrainConfig."""
    data = apply_overrides(load_yaml(path), overrides)
    config = from_dict(TrainConfig, data, str(path))
    config.sampler_config(str(path))  # validate now, not after the dataset is loaded
    return config


def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA when available, else CPU."""
    return World().device(name)


def train(config: TrainConfig, resume: bool = False, force: bool = False, progress: bool = True) -> Path:
    """Run (or resume) training; returns the path of the final checkpoint.

    Under torchrun every rank calls this: each samples its shard of the global batch, DDP averages the
    gradients, and rank 0 alone writes the run directory.
    """
    world = World.from_env()
    run_dir = Path(config.run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    replace = check_run_dir(run_dir, resume, force) if world.is_main else False
    loop = config.train
    shard = world.shard_size(loop.batch_size)
    if loop.threads > 0:
        torch.set_num_threads(loop.threads)
    device = world.device(loop.device)

    # Everything that can refuse the run comes before the run directory is touched: a --force run
    # with a bad dataset or recipe leaves the run it would have replaced as it was.
    dataset = load_dataset(config.dataset.path, config.dataset.data_fraction, config.seed)
    sampler = HierarchicalGoalSampler(dataset, config.sampler_config())
    torch.manual_seed(config.seed)
    agent = HIQLAgent(config.agent, dataset.obs_dim, dataset.action_dim, loop.steps).to(device)
    world.join(device)
    try:
        ckpt = world.broadcast(_open_run_dir(run_dir, replace, resume, config, dataset) if world.is_main else None)
        if ckpt is None:
            rng = seed_rank(config.seed, world.rank)
        else:
            ckpt.restore(agent)
            rng = restore_rng(ckpt, world.rank)
        resume_step = (ckpt.step if ckpt else 0) if resume else None
        _train_loop(agent, world.wrap(agent, device), sampler, shard, rng, resume_step, config, world, progress)
    finally:
        world.leave()
    return ckpt_path


def _open_run_dir(run_dir: Path, replace: bool, resume: bool, config: TrainConfig,
                  dataset: Dataset) -> Checkpoint | None:
    """Rank 0: prepare the run directory; the checkpoint to resume from, checked against this run."""
    prepare_run_dir(run_dir, replace)
    ckpt_path = run_dir / CHECKPOINT_NAME
    data_record = {"path": dataset.source, "sha256": dataset_sha256(dataset.source)}
    ckpt = None
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        _check_same_recipe(ckpt.config, config, ckpt_path)
        _check_same_dataset(run_dir / DATASET_RECORD, data_record)
    else:
        save_json(run_dir / DATASET_RECORD, data_record)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return ckpt


def _train_loop(agent: HIQLAgent, forward: nn.Module, sampler: HierarchicalGoalSampler, shard: int,
                rng: np.random.Generator, resume_step: int | None, config: TrainConfig, world: World,
                progress: bool) -> None:
    """Updates after `resume_step` (None: a new run) to train.steps; rank 0 logs, evaluates and checkpoints."""
    loop = config.train
    start = resume_step or 0
    ckpt_path = Path(config.run_dir) / CHECKPOINT_NAME
    metrics = MetricsLogger(config.run_dir, resume_step=resume_step) if world.is_main else None
    bar = tqdm(total=loop.steps, initial=start, disable=not (progress and world.is_main), desc="train",
               dynamic_ncols=True)
    tick, tick_step = time.perf_counter(), start
    for step in range(start + 1, loop.steps + 1):
        info = agent.update(agent.batch_to_tensors(sampler.sample(shard, rng)), forward)
        bar.update(1)
        if step % loop.log_interval == 0:
            if world.size == 1:
                _apply_threads_request(Path(config.run_dir))
            values = world.mean(info)
            if metrics is not None:
                now = time.perf_counter()
                values["steps_per_s"] = (step - tick_step) / (now - tick)
                tick, tick_step = now, step
                metrics.log("train", step, values)
                bar.set_postfix(loss=f"{values['loss']:.3f}", sps=f"{values['steps_per_s']:.1f}")
        if metrics is not None and config.env and loop.eval_interval and (
                step == loop.steps or (step >= loop.eval_start and step % loop.eval_interval == 0)):
            _evaluate_and_log(agent, config, step, metrics, progress)
        if step % loop.checkpoint_interval == 0 or step == loop.steps:
            states = world.gather(rng_state(rng))
            if world.is_main:
                save_checkpoint(ckpt_path, agent, config, step, rng, rank_rngs=states[1:])
    bar.close()
    if metrics is not None:
        metrics.close()


def _apply_threads_request(run_dir: Path) -> None:
    """Raise torch's intra-op threads to the count in `run_dir`/THREADS_REQUEST, if there is one."""
    request = run_dir / THREADS_REQUEST
    try:
        wanted = int(request.read_text())
    except (OSError, ValueError):  # none, or torn mid-write: the next log step reads it again
        return
    if wanted > torch.get_num_threads():
        torch.set_num_threads(wanted)
        tqdm.write(f"torch threads raised to {wanted} ({request})")
    request.replace(run_dir / THREADS_APPLIED)


def check_run_dir(run_dir: Path, resume: bool, force: bool) -> bool:
    """Whether an existing run is to be replaced; refuses a non-empty run_dir without --resume/--force."""
    if resume and force:
        raise ConfigError("--resume and --force are mutually exclusive")
    occupied = run_dir.exists() and any(run_dir.iterdir())
    if occupied and not resume and not force:
        raise OutputExistsError(f"{run_dir}: run directory is not empty (use --resume to continue it "
                                "or --force to start over)")
    return occupied and force


def prepare_run_dir(run_dir: Path, replace: bool) -> None:
    """Remove the run being replaced (once the new one can start), create run_dir, clear torn writes."""
    if replace:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"):  # left by a kill during a checkpoint write
        stale.unlink()


def _check_same_recipe(saved: dict[str, Any], config: TrainConfig, ckpt_path: Path) -> None:
    """Refuse to resume with another agent, data, sampler or seed, or, under a cosine schedule (which spans
    train.steps), another step count. Knobs added since the checkpoint was written count at their defaults."""
    saved, current = to_dict(from_dict(TrainConfig, saved, str(ckpt_path))), to_dict(config)
    for section in ("agent", "dataset", "sampler", "seed"):
        if saved[section] != current[section]:
            raise ConfigError(f"{ckpt_path}: cannot resume: '{section}' differs from the checkpoint's recipe")
    if config.agent.lr_schedule == "cosine" and saved["train"]["steps"] != config.train.steps:
        raise ConfigError(f"{ckpt_path}: cannot resume: train.steps differs from the checkpoint's recipe "
                          f"({saved['train']['steps']}) and agent.lr_schedule: cosine decays over train.steps")


def _check_same_dataset(record_path: Path, current: dict[str, str]) -> None:
    """Refuse to resume on other data (e.g. a dataset regenerated on another machine); runs written before
    runs recorded their dataset have no record and resume as they did."""
    if not record_path.exists():
        return
    saved = json.loads(record_path.read_text())
    if saved["sha256"] != current["sha256"]:
        raise ConfigError(f"{record_path}: cannot resume: {current['path']} (sha256 {current['sha256'][:12]}…) is not "
                          f"the dataset this run was trained on ({saved['path']}, sha256 {saved['sha256'][:12]}…)")


def _evaluate_and_log(agent: HIQLAgent, config: TrainConfig, step: int, metrics: MetricsLogger,
                      progress: bool) -> None:
    from nfhiql_core.evaluation.protocol import evaluate  # imports ogbench/mujoco only when evaluating

    agent.eval()
    policy = TorchPolicy(agent, config.train.eval_temperature, config.seed, config.train.eval_subgoal_candidates)
    result = evaluate(policy, config.env,
                      episodes_per_task=config.train.eval_episodes, seed=config.seed, progress=False)
    agent.train()
    values = {"success": result.success, "ci95": result.ci95,
              **{f"task{t}": s for t, s in result.per_task_success.items()}}
    metrics.log("eval", step, values)
    if progress:
        tqdm.write(f"step {step}: success {result.success:.3f} ± {result.ci95:.3f}")

