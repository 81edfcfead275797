"""Run a policy bundle with ONNX Runtime: `plan(observation, goal)` and `act(observation, subgoal)`.

No torch and no ROS: numpy in, numpy out. Each call takes one sample (1-D arrays) or a batch
(2-D arrays) and also returns the policy's log-likelihood of what it output (a confidence signal).

* Execution providers are tried in list order (default CUDA, then CPU). ORT silently falls back to
  CPU when CUDA cannot start, so `PolicyRuntime.providers` reports what actually runs, a fallback
  is logged as a warning, and `required_providers` turns a missing provider into `ProviderError`.
  On Jetson, put TensorRT first: `[("TensorrtExecutionProvider", {"trt_fp16_enable": False}),
  "CUDAExecutionProvider", "CPUExecutionProvider"]` (entries may be names or (name, options)).
* CPU runs with 1 intra-op thread by default (more threads only add jitter for models this small).
* Noise: z = 0 unless `temperature` > 0, then temperature · N(0, I) from a generator seeded with
  `seed`; an explicit `z` overrides both. So z = 0 or a fixed seed gives deterministic outputs.
* Actions are clipped to the bundle's bounds here, not in the graph: a non-finite raw output is
  detected first and raised as `NonFiniteOutputError` (clipping would turn +inf into a valid bound).
  The log-likelihood is that of the unclipped sample.
* A single sample (1-D arrays of the bundle's widths) runs through an IOBinding to buffers allocated at
  load time (`OneRowBinding`): no feed dict, no per-call allocation by ORT, one copy in and out.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, NamedTuple, Sequence

import numpy as np
import onnxruntime as ort

from nfhiql_core.control.replan import ReplanSchedule
from nfhiql_core.deploy import DEFAULT_PROVIDERS
from nfhiql_core.deploy.bundle import (
    LEVELS,
    BundleError,
    BundleMetadata,
    ModelInfo,
    check_dims,
    expected_shapes,
    load_bundle,
)
from nfhiql_core.errors import NfhiqlError

log = logging.getLogger(__name__)



class ProviderError(NfhiqlError, RuntimeError):
    """A requested execution provider is unknown, or a required one is not the one running."""


class NonFiniteOutputError(NfhiqlError, FloatingPointError):
    """A model produced NaN or inf; the caller should treat it as a request for a safe stop."""


class InputShapeError(NfhiqlError, ValueError):
    """An input array does not have the shape the bundle expects."""


class PlanOutput(NamedTuple):
    subgoal: np.ndarray
    log_prob: np.ndarray


class ActOutput(NamedTuple):
    action: np.ndarray
    log_prob: np.ndarray


def provider_name(spec: Any) -> str:
    """Name of a provider list entry ('XExecutionProvider' or ('XExecutionProvider', options))."""
    return spec if isinstance(spec, str) else spec[0]


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """Sequential execution, full graph optimisation, `intra_op_threads` CPU threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _usable_providers(providers: Sequence[Any], required: Sequence[str]) -> list[Any]:
    """The requested providers this onnxruntime build has; ProviderError for unknown/missing ones."""
    known, available = set(ort.get_all_providers()), set(ort.get_available_providers())
    unknown = [provider_name(p) for p in [*providers, *required] if provider_name(p) not in known]
    if unknown:
        raise ProviderError(f"unknown execution provider {unknown[0]!r} (known: {', '.join(sorted(known))})")
    missing = [r for r in required if r not in available]
    if missing:
        raise ProviderError(f"required execution provider {missing[0]} is not in this onnxruntime build "
                            f"(available: {', '.join(ort.get_available_providers())})")
    usable = [p for p in providers if provider_name(p) in available]
    if not usable:
        raise ProviderError(f"none of the providers {[provider_name(p) for p in providers]} is available "
                            f"(available: {', '.join(ort.get_available_providers())})")
    return usable


def create_session(path: str | os.PathLike, providers: Sequence[Any] = DEFAULT_PROVIDERS,
                   required_providers: Sequence[str] = (), intra_op_threads: int = 1) -> ort.InferenceSession:
    """An InferenceSession on the first working providers; checks that required ones really run."""
    usable = _usable_providers(providers, required_providers)
    try:
        session = ort.InferenceSession(os.fspath(path), session_options(intra_op_threads), providers=usable)
    except Exception as exc:  # onnxruntime raises its own pybind types (Fail, InvalidGraph, ...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BundleError(f"{path}: onnxruntime cannot load the model ({first})") from None
    active = session.get_providers()
    not_running = [r for r in required_providers if r not in active]
    if not_running:
        raise ProviderError(f"required execution provider {not_running[0]} failed to start "
                            f"(running on {', '.join(active)})")
    return session


class OneRowBinding:
    """Batch-1 calls of a session through an IOBinding to float32 buffers bound once, at load.

    A call copies the three inputs in, runs, and returns one copy of the output row with its log-likelihood
    appended. A lock makes concurrent calls (of one level) safe.
    """

    def __init__(self, session: ort.InferenceSession, input_widths: tuple[int, ...], output_width: int):
        self.session = session
        self.input_shapes = tuple((width,) for width in input_widths)
        self.inputs = [np.zeros((1, width), np.float32) for width in input_widths]
        self.result = np.zeros(output_width + 1, np.float32)  # (output, log_prob)
        self.zeros = np.zeros_like(self.result)
        self.binding = session.io_binding()
        for node, buffer in zip(session.get_inputs(), self.inputs):
            self.binding.bind_input(node.name, "cpu", 0, np.float32, buffer.shape, buffer.ctypes.data)
        (sample, log_prob), address = session.get_outputs(), self.result.ctypes.data
        self.binding.bind_output(sample.name, "cpu", 0, np.float32, (1, output_width), address)
        self.binding.bind_output(log_prob.name, "cpu", 0, np.float32, (1,), address + 4 * output_width)
        self.lock = threading.Lock()

    def fits(self, observation: np.ndarray, condition: np.ndarray, z: np.ndarray | None) -> bool:
        """Whether these are single samples of the bound widths (z None: zeros)."""
        shapes = self.input_shapes
        return (np.shape(observation) == shapes[0] and np.shape(condition) == shapes[1]
                and (z is None or np.shape(z) == shapes[2]))

    def run(self, observation: np.ndarray, condition: np.ndarray, z: np.ndarray | None) -> np.ndarray:
        """[output row, log_prob] of one sample, a new array."""
        with self.lock:
            self.inputs[0][0] = observation
            self.inputs[1][0] = condition
            if z is None:
                self.inputs[2].fill(0.0)
            else:
                self.inputs[2][0] = z
            self.session.run_with_iobinding(self.binding)
            return self.result.copy()

    def finite(self, result: np.ndarray) -> bool:
        """Whether a `run` result is all finite: x·0 is 0 for finite x and NaN otherwise (one cheap call)."""
        return result.dot(self.zeros) == 0.0


class LevelSession:
    """One level's model: raw batched float32 (observation, condition, z) -> (output, log_prob).

    `widths` = (input widths, output widths) from bundle.json (`expected_shapes`): a model whose
    declared shapes disagree is refused at load, not on the first message; with them, `one` runs
    single samples through preallocated buffers.
    """

    def __init__(self, path: str | os.PathLike, model: ModelInfo, providers: Sequence[Any] = DEFAULT_PROVIDERS,
                 required_providers: Sequence[str] = (), intra_op_threads: int = 1,
                 widths: tuple[tuple[int, ...], tuple[int, ...]] | None = None):
        self.session = create_session(path, providers, required_providers, intra_op_threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        found = (tuple(self.input_names), tuple(o.name for o in self.session.get_outputs()))
        if found != (model.inputs, model.outputs):
            raise BundleError(f"{path}: model inputs/outputs {found} differ from bundle.json's "
                              f"{(model.inputs, model.outputs)}")
        self.one = None
        if widths is not None:
            _check_widths(path, self.session, *widths)
            self.one = OneRowBinding(self.session, widths[0], widths[1][0])

    def run(self, observation: np.ndarray, condition: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, log_prob = self.session.run(None, dict(zip(self.input_names, (observation, condition, z))))
        return out, log_prob


class PolicyRuntime:
    """A loaded bundle: `plan` and `act`, single or batched, with log-likelihoods.

    `obs_dim`/`goal_dim`/`action_dim`, when given, are the caller's dimensions: a bundle trained for
    other dimensions is rejected at load time with a one-line BundleError.
    """

    def __init__(self, bundle_dir: str | os.PathLike, providers: Sequence[Any] = DEFAULT_PROVIDERS,
                 required_providers: Sequence[str] = (), intra_op_threads: int = 1,
                 temperature: float = 0.0, seed: int | None = 0, obs_dim: int | None = None,
                 goal_dim: int | None = None, action_dim: int | None = None):
        self.bundle = load_bundle(bundle_dir)
        check_dims(self.metadata, str(bundle_dir), obs_dim, goal_dim, action_dim)
        self.levels = {level: LevelSession(self.bundle.model_path(level), self.metadata.model(level), providers,
                                           required_providers, intra_op_threads, expected_shapes(self.metadata, level))
                       for level in LEVELS}
        self.temperature = temperature
        self.rng = np.random.default_rng(seed)
        self.action_low = np.asarray(self.metadata.action_low, dtype=np.float32)
        self.action_high = np.asarray(self.metadata.action_high, dtype=np.float32)
        if self.providers[0] != provider_name(providers[0]):
            log.warning("%s: %s is not available, running on %s", bundle_dir, provider_name(providers[0]),
                        self.providers[0])
        log.info("policy bundle %s loaded, running on %s", bundle_dir, ", ".join(self.providers))

    @property
    def metadata(self) -> BundleMetadata:
        return self.bundle.metadata

    @property
    def providers(self) -> list[str]:
        """The execution providers that actually run the models, in priority order."""
        return self.levels["low"].session.get_providers()

    def plan(self, observation: np.ndarray, goal: np.ndarray, z: np.ndarray | None = None) -> PlanOutput:
        """Subgoal(s) for reaching `goal` from `observation`, and their log-likelihood."""
        return PlanOutput(*self._run("high", observation, goal, self.metadata.goal_dim, z))

    def act(self, observation: np.ndarray, subgoal: np.ndarray, z: np.ndarray | None = None) -> ActOutput:
        """Action(s) towards `subgoal`, clipped to the bundle's bounds, and the unclipped log-likelihood."""
        action, log_prob = self._run("low", observation, subgoal, self.metadata.subgoal_dim, z)
        return ActOutput(np.minimum(np.maximum(action, self.action_low), self.action_high), log_prob)  # np.clip: 2×

    def noise(self, batch: int, dim: int) -> np.ndarray:
        """Base noise: zeros at temperature 0, else temperature · N(0, I) from the seeded generator."""
        if self.temperature == 0.0:
            return np.zeros((batch, dim), dtype=np.float32)
        return self.temperature * self.rng.standard_normal((batch, dim), dtype=np.float32)

    def _run(self, level: str, observation: np.ndarray, condition: np.ndarray, condition_dim: int,
             z: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        one = self.levels[level].one
        if one.fits(observation, condition, z):
            if z is None and self.temperature != 0.0:
                z = self.noise(1, self.metadata.noise_dim(level))[0]
            result = one.run(observation, condition, z)
            if not one.finite(result):
                _check_finite(level, result[None, :-1], result[-1:])
            return result[:-1], result[-1]
        single = np.ndim(observation) < 2
        batch = 1 if single else len(observation)
        dim = self.metadata.noise_dim(level)
        if z is None:
            z = self.noise(batch, dim)[0] if single else self.noise(batch, dim)
        condition_name = "goal" if level == "high" else "subgoal"
        inputs = [_as_batch(name, x, (batch, width), single) for name, x, width in (
            ("observation", observation, self.metadata.obs_dim), (condition_name, condition, condition_dim),
            ("z", z, dim))]
        out, log_prob = self.levels[level].run(*inputs)
        _check_finite(level, out, log_prob)
        return (out[0], log_prob[0]) if single else (out, log_prob)


def _check_widths(path: str | os.PathLike, session: ort.InferenceSession, inputs: tuple[int, ...],
                  outputs: tuple[int, ...]) -> None:
    """BundleError if a model's declared (batch, width) shapes contradict bundle.json's dims."""
    declared = [("input", i.name, i.shape) for i in session.get_inputs()]
    declared += [("output", o.name, o.shape) for o in session.get_outputs()]
    for (kind, name, shape), width in zip(declared, [*inputs, *outputs, None]):  # log-likelihood: (batch,)
        rank_ok = len(shape) == (1 if width is None else 2)
        if not rank_ok or (width is not None and isinstance(shape[1], int) and shape[1] != width):
            want = "(batch)" if width is None else f"(batch, {width})"
            raise BundleError(f"{path}: model {kind} {name!r} has shape {shape}, but bundle.json's dims say {want}")


def _as_batch(name: str, x: np.ndarray, shape: tuple[int, int], single: bool) -> np.ndarray:
    """`x` as a contiguous float32 (batch, width) array; InputShapeError if its shape is wrong."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape != (shape[1:] if single else shape):
        raise InputShapeError(f"{name} has shape {x.shape}, expected {shape[1:] if single else shape}")
    return np.ascontiguousarray(x[None] if single else x)


def _check_finite(level: str, out: np.ndarray, log_prob: np.ndarray) -> None:
    bad = ~(np.isfinite(out).all(axis=1) & np.isfinite(log_prob))
    if bad.any():
        what = "subgoal" if level == "high" else "action"
        raise NonFiniteOutputError(f"{level}-level policy produced a non-finite {what} or log-likelihood "
                                   f"(batch rows {np.flatnonzero(bad).tolist()[:8]})")


class BundlePolicy:
    """`evaluate()` adapter (stateful-policy protocol): re-plans each env by the shared re-plan rule.

    Each env counts its steps from its episode's start with a `ReplanSchedule` (the one the ROS
    planner and controller use), so it re-plans on step k with k % replan_every == 0 and keeps
    its last subgoal in between, as a planner running slower than the controller would.
    `replan_every=1` is HIQL's policy (re-plan every step).
    """

    def __init__(self, runtime: PolicyRuntime, replan_every: int = 1):
        self.runtime = runtime
        self.replan_every = replan_every
        ReplanSchedule(replan_every)  # validates
        self.schedules: dict[int, ReplanSchedule] = {}
        self.subgoals: dict[int, np.ndarray] = {}

    def reset(self, env_indices: np.ndarray) -> None:
        """Envs that start a new episode: their step count restarts at 0 (re-plan at once)."""
        for i in env_indices.tolist():
            self.schedules.setdefault(i, ReplanSchedule(self.replan_every)).reset()

    def __call__(self, observations: np.ndarray, goals: np.ndarray, env_indices: np.ndarray) -> np.ndarray:
        slots = env_indices.tolist()
        for i in slots:
            if i not in self.schedules:
                self.schedules[i] = ReplanSchedule(self.replan_every)
                self.schedules[i].reset()
        # stamps here: each env's step index
        due = [row for row, i in enumerate(slots) if self.schedules[i].observe(self.schedules[i].count)[0]]
        if due:
            subgoals = self.runtime.plan(observations[due], goals[due]).subgoal
            for row, subgoal in zip(due, subgoals):
                self.subgoals[slots[row]] = subgoal
        return self.runtime.act(observations, np.stack([self.subgoals[i] for i in slots])).action
