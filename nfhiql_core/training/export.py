"""`nfhiql export`: checkpoint → self-verified policy bundle (layout: `nfhiql_core.deploy.bundle`).

Both levels are exported in the sampling direction (noise z as an input, dynamic batch), with the
value function V(s, g) beside them; all three are checked against torch with ONNX Runtime before
anything is published (a failed export writes nothing), and the bundle gets out-of-distribution
thresholds from the training dataset when it is at hand. Why each of these is done the way it is:
docs/design/export.md.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

import nfhiql_core
from nfhiql_core.algo.agent import HIQLAgent
from nfhiql_core.algo.networks import length_normalize
from nfhiql_core.atomic_io import check_output_dir, publish_dir, save_json, staging_dir
from nfhiql_core.checksums import sha256_file
from nfhiql_core.config import from_dict, to_dict
from nfhiql_core.data.dataset import load_dataset
from nfhiql_core.data.goal_sampler import GoalSamplerConfig, HierarchicalGoalSampler
from nfhiql_core.deploy.bundle import (
    FORMAT,
    LEVELS,
    REWARD_AT_GOAL,
    REWARD_PER_STEP,
    VALUE_INPUTS,
    VALUE_OUTPUTS,
    BundleMetadata,
    ModelInfo,
    ParityReport,
    ValueInfo,
    load_bundle,
    sealed,
)
from nfhiql_core.deploy.runtime import LevelSession
from nfhiql_core.deploy.value_runtime import ValueRuntime
from nfhiql_core.errors import NfhiqlError
from nfhiql_core.evaluation.names import component_names
from nfhiql_core.interface.robots import env_spec
from nfhiql_core.interface.spec import InterfaceSpec, load_spec
from nfhiql_core.training.checkpoint import load_checkpoint

OPSET = 18
PARITY_ATOL = 1e-5
PARITY_RTOL = 1e-5  # of the output's magnitude: ~80 float32 ulps; export bugs are >= 1e-3 relative
PARITY_BATCH_SIZES = (1, 7, 64)
PARITY_OBS_SCALE = 10.0  # observations/goals ~ N(0, 10²): covers maze coordinates (0..~30)
INPUTS = {"high": ("observation", "goal", "z"), "low": ("observation", "subgoal", "z"), "value": VALUE_INPUTS}
OUTPUTS = {"high": ("subgoal", "log_prob"), "low": ("action", "log_prob"), "value": VALUE_OUTPUTS}
CPU = ["CPUExecutionProvider"]
OOD_SAMPLES = 10_000  # dataset states scored for the OOD thresholds
OOD_PERCENTILE = 1.0  # threshold = this percentile of the in-distribution log-likelihoods

log = logging.getLogger(__name__)


class ExportError(NfhiqlError):
    """Export failed (e.g. ONNX Runtime and torch disagree); nothing was written."""


class HighLevelPolicy(nn.Module):
    """(observation, goal, z) → (subgoal, log_prob): `HIQLAgent.plan` as a module."""

    def __init__(self, agent: HIQLAgent):
        super().__init__()
        self.agent = agent

    def forward(self, observation: torch.Tensor, goal: torch.Tensor,
                z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.agent.plan(observation, goal, z)


class LowLevelPolicy(nn.Module):
    """(observation, subgoal, z) → (raw action, log_prob): `HIQLAgent.act` without the clipping."""

    def __init__(self, agent: HIQLAgent):
        super().__init__()
        self.actor = agent.inference_actors()[1]

    def forward(self, observation: torch.Tensor, subgoal: torch.Tensor,
                z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor.sample_with_log_prob(torch.cat([observation, subgoal], -1), z)


class GoalValue(nn.Module):
    """(observation, goal) → value: `HIQLAgent.goal_value`, the mean of the online value heads on
    φ(s, g), the V(s, g) the actor advantages use (not the target heads' min of the value loss)."""

    def __init__(self, agent: HIQLAgent):
        super().__init__()
        self.agent = agent

    def forward(self, observation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.agent.goal_value(observation, goal)


def level_modules(agent: HIQLAgent) -> dict[str, nn.Module]:
    """The two exported modules of an agent, in eval mode."""
    return {"high": HighLevelPolicy(agent).eval(), "low": LowLevelPolicy(agent).eval()}


def exported_modules(agent: HIQLAgent, with_value: bool = True) -> dict[str, nn.Module]:
    """The modules a bundle holds, by model name ('high', 'low' and, `with_value`, 'value'), in eval mode."""
    return {**level_modules(agent), **({"value": GoalValue(agent).eval()} if with_value else {})}


def model_inputs(agent: HIQLAgent, model: str, batch: int, random_z: bool,
                 generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random inputs of a model: (observation, goal|subgoal, z) for a level, (observation, goal) for
    the value; rep-space subgoals are length-normalised."""
    def normal(dim: int, scale: float = 1.0) -> torch.Tensor:
        return scale * torch.randn(batch, dim, generator=generator)

    obs = normal(agent.obs_dim, PARITY_OBS_SCALE)
    if model == "low" and agent.config.subgoal_space == "rep":
        condition = length_normalize(normal(agent.subgoal_dim))
    else:  # a goal or a state-space subgoal: both are observations
        condition = normal(agent.obs_dim, PARITY_OBS_SCALE)
    if model == "value":
        return obs, condition
    z_dim = agent.subgoal_dim if model == "high" else agent.action_dim
    return obs, condition, normal(z_dim) if random_z else torch.zeros(batch, z_dim)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the dynamo exporter's warnings and log lines (parity is checked explicitly)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_level(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path, model: str, opset: int) -> None:
    """Export one model ('high', 'low', 'value') to a single-file ONNX model with a dynamic batch dimension."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    with _quiet_exporter():
        torch.onnx.export(module, example, str(path), input_names=list(INPUTS[model]),
                          output_names=list(OUTPUTS[model]), dynamic_shapes=tuple({0: batch} for _ in example),
                          opset_version=opset, dynamo=True, external_data=False, verbose=False)
    onnx.checker.check_model(str(path), full_check=True)


def parity_diffs(agent: HIQLAgent, model: str, run: Callable[..., Sequence[np.ndarray]],
                 batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES, seed: int = 0
                 ) -> dict[str, tuple[float, float, float]]:
    """Per output of a model: (max |ORT − torch|, max |torch − torch float64|, max |torch float64|) on
    the same inputs, over each batch size with z = 0 and z ~ N(0, I) (the value has no z: twice with
    fresh inputs). `run` maps the numpy inputs to ORT's outputs."""
    module, module64 = exported_modules(agent)[model], exported_modules(copy.deepcopy(agent).double())[model]
    generator = torch.Generator().manual_seed(seed)
    worst = {name: (0.0, 0.0, 0.0) for name in OUTPUTS[model]}
    for batch in batch_sizes:
        for random_z in (False, True):
            inputs = model_inputs(agent, model, batch, random_z, generator)
            expected, exact = _outputs(module, inputs), _outputs(module64, [x.double() for x in inputs])
            got = run(*(x.numpy() for x in inputs))
            for name, g, e, e64 in zip(OUTPUTS[model], got, expected, exact):
                found = (np.abs(g - e).max(), np.abs(e - e64).max(), np.abs(e64).max())
                worst[name] = tuple(max(w, float(f)) for w, f in zip(worst[name], found))
    return worst


def _outputs(module: nn.Module, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """A module's output(s) as a list of arrays (the value model has one output, the levels two)."""
    with torch.no_grad():
        out = module(*inputs)
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def control_period(env: Any) -> float | None:
    """Seconds per env step: manipspace's `control_timestep()`, else MuJoCo's `dt`, else None."""
    unwrapped = env.unwrapped
    if callable(getattr(unwrapped, "control_timestep", None)):
        return float(unwrapped.control_timestep())
    dt = getattr(unwrapped, "dt", None)
    return None if dt is None else float(dt)


def _env_description(env_name: str | None, obs_dim: int, action_dim: int) -> dict[str, Any]:
    """Names, action bounds and control period of an OGBench env (without one: generic names,
    bounds [-1, 1] as `HIQLAgent.act` clips to, unknown period)."""
    obs_names, action_names = component_names(env_name, obs_dim, action_dim)
    desc = {"observation_names": obs_names, "action_names": action_names,
            "action_low": (-1.0,) * action_dim, "action_high": (1.0,) * action_dim, "control_period_s": None}
    if env_name is None:
        return desc
    from nfhiql_core.evaluation.episodes import make_env  # imports ogbench: only when an env is named

    env = make_env(env_name)
    try:
        if env.observation_space.shape != (obs_dim,) or env.action_space.shape != (action_dim,):
            raise ExportError(f"env {env_name} has observation/action shapes {env.observation_space.shape}/"
                              f"{env.action_space.shape}, the checkpoint ({obs_dim},)/({action_dim},)")
        desc.update(action_low=tuple(env.action_space.low.tolist()), action_high=tuple(env.action_space.high.tolist()),
                    control_period_s=control_period(env))
    finally:
        env.close()
    return desc


def _write_models(agent: HIQLAgent, tmp: Path, opset: int, atol: float, rtol: float, with_value: bool
                  ) -> tuple[dict[str, ModelInfo], ParityReport]:
    """Export both levels (and `with_value`, the value) into `tmp` and verify them against torch;
    ExportError if they differ."""
    models, diffs = {}, {}
    generator = torch.Generator().manual_seed(0)
    for name, module in exported_modules(agent, with_value).items():
        path = tmp / f"{name}.onnx"
        export_level(module, model_inputs(agent, name, 2, True, generator), path, name, opset)
        info = ModelInfo(path.name, sha256_file(path), INPUTS[name], OUTPUTS[name])
        if name == "value":
            models[name] = ValueInfo(**to_dict(info), discount=agent.config.discount,
                                     reward_per_step=REWARD_PER_STEP, reward_at_goal=REWARD_AT_GOAL)
            value_runtime = ValueRuntime(path, models[name], agent.obs_dim, agent.obs_dim, CPU)

            def run(observation: np.ndarray, goal: np.ndarray) -> tuple[np.ndarray]:
                return (value_runtime.values(observation, goal),)
        else:
            models[name] = info
            run = LevelSession(path, info, providers=CPU).run
        diffs.update({f"{name}.{output}": d for output, d in parity_diffs(agent, name, run).items()})
    for name, (diff, noise, scale) in diffs.items():
        if not diff <= atol + rtol * scale + 2 * noise:
            raise ExportError(f"ONNX model disagrees with torch on {name}: max abs diff {diff:.3g} > {atol:g} + "
                              f"{rtol:g} * {scale:.3g} (output magnitude) + 2 * {noise:.3g} (torch float32 error); "
                              "nothing written")
    return models, ParityReport(atol, PARITY_BATCH_SIZES, {k: d[0] for k, d in diffs.items()},
                                {k: d[1] for k, d in diffs.items()}, rtol, {k: d[2] for k, d in diffs.items()})


def ood_thresholds(models: dict[str, LevelSession], noise_dims: dict[str, int], observations: np.ndarray,
                   goals: np.ndarray, percentile: float = OOD_PERCENTILE) -> dict[str, float]:
    """Per level, the `percentile`-th percentile of the model's log-likelihood of its own z = 0 output:
    the high level on (observation, goal), the low level on (observation, the high level's subgoal)."""
    obs, goals = np.ascontiguousarray(observations, np.float32), np.ascontiguousarray(goals, np.float32)
    zeros = {level: np.zeros((len(obs), dim), np.float32) for level, dim in noise_dims.items()}
    subgoal, high = models["high"].run(obs, goals, zeros["high"])
    _, low = models["low"].run(obs, subgoal, zeros["low"])
    return {"high": float(np.percentile(high, percentile)), "low": float(np.percentile(low, percentile))}


def _dataset_metadata(config: dict[str, Any], models: dict[str, LevelSession], agent: HIQLAgent,
                      dataset: str | None) -> dict[str, Any]:
    """bundle.json's `ood_log_likelihood` and `data_range` from the training data (`dataset`, else the
    recipe's): both None, with a warning, when the recipe's dataset is not available; an explicit
    `dataset` must load. `data_range` is the per-value min and max of the dataset's observations (what
    a goal given to the robot is checked against)."""
    from nfhiql_core.training.train import TrainConfig  # the recipe's dataset and goal-sampler settings

    try:
        recipe = from_dict(TrainConfig, config, "checkpoint recipe")
        data = load_dataset(dataset or recipe.dataset.path, recipe.dataset.data_fraction, recipe.seed)
    except NfhiqlError as exc:
        if dataset is not None:
            raise
        log.warning("OOD thresholds and data range not computed (the controller's OOD alarm will be off, goals "
                    "are not range-checked): %s", exc)
        return {"ood_log_likelihood": None, "data_range": None}
    if data.obs_dim != agent.obs_dim:
        raise ExportError(f"{data.source}: dataset observations have dim {data.obs_dim}, "
                          f"the checkpoint {agent.obs_dim}")
    batch = HierarchicalGoalSampler(data, recipe.sampler_config()).sample(OOD_SAMPLES, np.random.default_rng(0))
    levels = ood_thresholds(models, {"high": agent.subgoal_dim, "low": agent.action_dim}, batch["observations"],
                            batch["high_actor_goals"])
    observations = data.observations
    return {"ood_log_likelihood": {**levels, "percentile": OOD_PERCENTILE, "samples": OOD_SAMPLES,
                                   "dataset": data.source},
            "data_range": {"low": observations.min(axis=0).astype(float).tolist(),
                           "high": observations.max(axis=0).astype(float).tolist(), "dataset": data.source}}


def export_bundle(checkpoint: str | os.PathLike, output_dir: str | os.PathLike, env: str | None = None,
                  control_period_s: float | None = None, force: bool = False, opset: int = OPSET,
                  atol: float = PARITY_ATOL, rtol: float = PARITY_RTOL, dataset: str | None = None,
                  interface: str | os.PathLike | None = None) -> BundleMetadata:
    """Export `checkpoint` to a verified bundle at `output_dir` and return its metadata.

    `env` defaults to the env in the checkpoint's recipe; `control_period_s` defaults to that env's
    control period; `dataset` (for the OOD thresholds) defaults to the recipe's training dataset.
    `interface` (a robot interface spec file) defaults to the spec the training data was converted
    with (its bag2data sidecar), else the env's shipped spec (config/robots/), else none; its names
    become the bundle's. Refuses a non-empty `output_dir` unless `force`.
    """
    out = Path(output_dir)
    check_output_dir(out, force)
    ckpt = load_checkpoint(checkpoint)
    agent = ckpt.build_agent("cpu").eval()
    env_name = env or ckpt.config.get("env")
    desc = _env_description(env_name, agent.obs_dim, agent.action_dim)
    if control_period_s is not None:
        desc["control_period_s"] = control_period_s
    spec = _interface(interface, ckpt.config, env_name)
    if spec is not None:
        desc.update(observation_names=tuple(spec.observation_names), action_names=tuple(spec.action_names),
                    interface=to_dict(spec))
    tmp = staging_dir(out)
    try:
        models, parity = _write_models(agent, tmp, opset, atol, rtol, _trained_on_step_penalty(ckpt.config))
        sessions = {level: LevelSession(tmp / models[level].file, models[level], CPU) for level in LEVELS}
        desc.update(_dataset_metadata(ckpt.config, sessions, agent, dataset))
        metadata = _metadata(agent, ckpt.config, ckpt.step, Path(checkpoint), env_name, desc, models, parity, opset)
        save_json(tmp / "bundle.json", sealed(to_dict(metadata)))
        load_bundle(tmp)  # what a runtime will check, before publishing
        publish_dir(tmp, out, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return metadata


def _trained_on_step_penalty(config: dict[str, Any]) -> bool:
    """Whether V was trained on the reward progress estimates invert (−1 per step, 0 at the goal: the goal
    sampler's gc_negative); without it the bundle gets no value model (with a warning)."""
    sampler = config.get("sampler") or {}
    if sampler.get("gc_negative", GoalSamplerConfig.gc_negative):
        return True
    log.warning("value model not exported: the recipe's sampler.gc_negative is false (reward 0 per step, 1 at the "
                "goal), and progress estimates assume -1 per step")
    return False


def _interface(path: str | os.PathLike | None, config: dict[str, Any], env_name: str | None
               ) -> InterfaceSpec | None:
    """The robot interface to embed (see `export_bundle`)."""
    if path is not None:
        return load_spec(path)
    data_path = (config.get("dataset") or {}).get("path")
    sidecar = Path(f"{data_path}.json") if data_path else None
    if sidecar is not None and sidecar.is_file():
        summary = json.loads(sidecar.read_text())
        if isinstance(summary, dict) and "spec" in summary:
            return from_dict(InterfaceSpec, summary["spec"], f"{sidecar}: spec")
    return env_spec(env_name)


def _metadata(agent: HIQLAgent, config: dict[str, Any], step: int, checkpoint: Path, env_name: str | None,
              desc: dict[str, Any], models: dict[str, ModelInfo], parity: ParityReport, opset: int) -> BundleMetadata:
    c = agent.config
    normalization = ({"kind": "length", "norm": math.sqrt(agent.subgoal_dim), "eps": 1e-6, "applied_in": "high.onnx"}
                     if c.subgoal_space == "rep" else None)
    data = {
        "format": FORMAT, "policy": c.policy, "subgoal_space": c.subgoal_space,
        "obs_dim": agent.obs_dim, "goal_dim": agent.obs_dim, "subgoal_dim": agent.subgoal_dim,
        "action_dim": agent.action_dim, "goal_names": desc["observation_names"], **desc,
        "subgoal_steps": c.subgoal_steps, "subgoal_normalization": normalization, "env": env_name,
        "step": step, "opset": opset, **{level: to_dict(models[level]) for level in LEVELS},
        "value": to_dict(models.get("value")),
        "source_checkpoint": {"path": checkpoint.name, "sha256": sha256_file(checkpoint)},
        "parity": to_dict(parity),
        "versions": {"nfhiql": nfhiql_core.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "training_config": config,
    }
    return from_dict(BundleMetadata, to_dict(data), "bundle metadata")
