"""Policy bundle: a directory with the two policies as ONNX models and `bundle.json` describing them.

    BUNDLE_DIR/
      bundle.json   metadata (`BundleMetadata`): dims, names, action bounds, subgoal space and its
                    normalisation, subgoal steps, control period, env, training config, checksums,
                    the robot interface spec the policy was trained with
      high.onnx     (observation, goal, z)    -> (subgoal, log_prob)   subgoal already normalised
      low.onnx      (observation, subgoal, z) -> (action, log_prob)    action NOT clipped (see runtime)
      value.onnx    (observation, goal)       -> (value)               HIQL's V(s, g) (optional: bundles
                                                                       exported before it have none)

Both models take the base noise z as an input (z = 0: the deterministic policy) and have a
dynamic batch dimension. `load_bundle` verifies bundle.json's own checksum and the models', validates
every value a runtime relies on and fails with a one-line `BundleError` naming the field. Written by
`nfhiql_core.training.export`, read by `nfhiql_core.deploy.runtime` (and `value_runtime`); needs neither
torch nor onnxruntime.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nfhiql_core.atomic_io import save_json
from nfhiql_core.checksums import sha256_file
from nfhiql_core.config import from_dict, to_dict
from nfhiql_core.errors import ConfigError, NfhiqlError
from nfhiql_core.interface.spec import InterfaceSpec

FORMAT = "nfhiql-bundle/1"
METADATA_FILE = "bundle.json"
METADATA_DIGEST = "metadata_sha256"  # bundle.json's own checksum (see `metadata_digest`)
POLICIES = ("flow", "gaussian")
SUBGOAL_SPACES = ("rep", "state")
LEVELS = ("high", "low")
VALUE_INPUTS, VALUE_OUTPUTS = ("observation", "goal"), ("value",)
# The reward V(s, g) was trained on (the goal sampler's gc_negative: true): the only one steps-to-go inverts.
REWARD_PER_STEP, REWARD_AT_GOAL = -1.0, 0.0
# Opsets every onnxruntime allowed by the `runtime`/`gpu` extras (>= 1.18) implements.
MIN_OPSET, MAX_OPSET = 7, 21


class BundleError(NfhiqlError):
    """A bundle is missing, malformed, corrupted or incompatible with its caller."""


@dataclass(frozen=True)
class ModelInfo:
    """One level's ONNX file, its sha256 and its input/output names (in order)."""

    file: str
    sha256: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class ValueInfo(ModelInfo):
    """value.onnx and what its V(s, g) means: the expected discounted return, at `discount`, of a
    reward of `reward_per_step` on every step before the goal and `reward_at_goal` at it (an episode
    ends there). With (−1, 0), V = −(1 − γⁿ)/(1 − γ) for a goal n steps away."""

    discount: float
    reward_per_step: float
    reward_at_goal: float


@dataclass(frozen=True)
class SourceCheckpoint:
    """The checkpoint the bundle was exported from: its file name (no machine's path) and sha256."""

    path: str
    sha256: str


@dataclass(frozen=True)
class ParityReport:
    """Export-time check of ORT against torch over batch sizes × {z = 0, z ~ N(0, I)}.

    Keys are 'high.subgoal', 'high.log_prob', 'low.action', 'low.log_prob' (and 'value.value' with a
    value model). `max_abs_diff` is max |ORT − torch float32|, `torch_float32_error` is
    max |torch float32 − torch float64| and `output_magnitude` max |torch float64| on the same inputs;
    the check passed: max_abs_diff ≤ atol + rtol · output_magnitude + 2 · torch_float32_error for
    every output.
    """

    atol: float
    batch_sizes: tuple[int, ...]
    max_abs_diff: dict[str, float]
    torch_float32_error: dict[str, float]
    rtol: float = 0.0  # bundles exported before the relative term passed with none
    output_magnitude: dict[str, float] | None = None


@dataclass(frozen=True)
class BundleMetadata:
    """Everything a runtime needs to know about the two models (the content of bundle.json).

    `subgoal_normalization` describes how rep-space subgoals are normalised: already applied
    inside high.onnx ({"kind": "length", "norm": √dim, "eps": ...}); None for state-space subgoals.
    `control_period_s` is the period the policy was trained to act at (None if unknown).
    `env` is the OGBench environment (or robot) the policy was trained for.
    `ood_log_likelihood` holds the out-of-distribution alarm thresholds taken from the training data
    at export: {"high": h, "low": l, "percentile": p, "samples": n, "dataset": path}, where h (l) is
    the p-th percentile of the high (low) level's log-likelihood of its own z = 0 output over n
    dataset states (see `nfhiql_core.training.export.ood_thresholds`); None when the dataset was not
    available at export (the controller's alarm is then disabled).
    `value` describes value.onnx; None in bundles exported without one (no progress estimates).
    """

    format: str
    policy: str
    subgoal_space: str
    obs_dim: int
    goal_dim: int
    subgoal_dim: int
    action_dim: int
    observation_names: tuple[str, ...]
    goal_names: tuple[str, ...]
    action_names: tuple[str, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    subgoal_steps: int
    subgoal_normalization: dict[str, Any] | None
    control_period_s: float | None
    env: str | None
    step: int
    opset: int
    high: ModelInfo
    low: ModelInfo
    source_checkpoint: SourceCheckpoint
    parity: ParityReport
    versions: dict[str, str]
    training_config: dict[str, Any]
    ood_log_likelihood: dict[str, Any] | None = None  # None: exported without its dataset (no alarm)
    interface: dict[str, Any] | None = None  # the robot interface spec (nfhiql_core.interface); None: vectors only
    # Per-value min/max of the training data's observations ({"low", "high", "dataset"}), what goals are
    # checked against; None: exported without its dataset
    data_range: dict[str, Any] | None = None
    value: ValueInfo | None = None  # value.onnx; None: exported without it (older bundles)

    def model(self, level: str) -> ModelInfo:
        """The ModelInfo of level 'high' or 'low'."""
        return self.high if level == "high" else self.low

    def noise_dim(self, level: str) -> int:
        """Dimension of the base noise z of a level (= its output dimension)."""
        return self.subgoal_dim if level == "high" else self.action_dim

    def interface_spec(self) -> InterfaceSpec | None:
        """The robot interface the policy was trained with (validated at load), None without one."""
        return None if self.interface is None else from_dict(InterfaceSpec, self.interface, "bundle interface")

    def ood_threshold(self, level: str) -> float | None:
        """The OOD alarm threshold on a level's log-likelihood, or None when the bundle has none."""
        return None if self.ood_log_likelihood is None else float(self.ood_log_likelihood[level])


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk."""

    path: Path
    metadata: BundleMetadata

    def model_path(self, level: str) -> Path:
        return self.path / self.metadata.model(level).file

    def models(self) -> list[ModelInfo]:
        """Every model file the bundle has: the two levels, then the value model if there is one."""
        meta = self.metadata
        return [meta.high, meta.low, *([meta.value] if meta.value is not None else [])]


def metadata_digest(data: dict[str, Any]) -> str:
    """sha256 of bundle.json's content without its `metadata_sha256` (canonical JSON: sorted keys)."""
    body = {k: v for k, v in data.items() if k != METADATA_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sealed(data: dict[str, Any]) -> dict[str, Any]:
    """bundle.json's content with its `metadata_sha256` set (what export writes)."""
    return {**{k: v for k, v in data.items() if k != METADATA_DIGEST}, METADATA_DIGEST: metadata_digest(data)}


def read_metadata(bundle_dir: str | os.PathLike, verify_checksum: bool = True) -> BundleMetadata:
    """Parse, checksum-verify and type-check bundle.json (values are checked by `validate_metadata`)."""
    path = Path(bundle_dir) / METADATA_FILE
    if not Path(bundle_dir).is_dir():
        raise BundleError(f"{bundle_dir}: bundle directory not found")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{bundle_dir}: not a policy bundle ({METADATA_FILE} missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise BundleError(f"{path}: unsupported bundle format {found!r} (this runtime reads {FORMAT!r})")
    if verify_checksum:
        if METADATA_DIGEST not in data:
            raise BundleError(f"{path}: {METADATA_DIGEST} missing (exported by an older nfhiql): re-export the "
                              "bundle with `nfhiql export`")
        if data[METADATA_DIGEST] != metadata_digest(data):
            raise BundleError(f"{path}: {METADATA_DIGEST} mismatch (bundle.json was edited or corrupted since "
                              "export): re-export the bundle")
    data.pop(METADATA_DIGEST, None)
    try:
        return from_dict(BundleMetadata, data, str(path))
    except ConfigError as exc:
        raise BundleError(str(exc)) from None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_metadata(meta: BundleMetadata, where: str) -> None:
    """Check every value a runtime relies on: dims, names, bounds, counts, thresholds, opset."""
    def fail(message: str) -> None:
        raise BundleError(f"{where}: {message}")

    if meta.policy not in POLICIES:
        fail(f"policy must be one of {', '.join(POLICIES)}, got {meta.policy!r}")
    if meta.subgoal_space not in SUBGOAL_SPACES:
        fail(f"subgoal_space must be one of {', '.join(SUBGOAL_SPACES)}, got {meta.subgoal_space!r}")
    for field in ("obs_dim", "goal_dim", "subgoal_dim", "action_dim", "subgoal_steps"):
        if getattr(meta, field) < 1:
            fail(f"{field} must be >= 1, got {getattr(meta, field)}")
    if meta.step < 0:
        fail(f"step must be >= 0, got {meta.step}")
    if not MIN_OPSET <= meta.opset <= MAX_OPSET:
        fail(f"unsupported ONNX opset {meta.opset} (supported: {MIN_OPSET}..{MAX_OPSET})")
    for field, dim in (("observation_names", meta.obs_dim), ("goal_names", meta.goal_dim),
                       ("action_names", meta.action_dim), ("action_low", meta.action_dim),
                       ("action_high", meta.action_dim)):
        if len(getattr(meta, field)) != dim:
            fail(f"{field} has {len(getattr(meta, field))} entries, expected {dim}")
    for field in ("action_low", "action_high"):
        for i, value in enumerate(getattr(meta, field)):
            if not _finite(value):
                fail(f"{field}[{i}] is {value!r}, must be a finite number")
    for i, (lo, hi) in enumerate(zip(meta.action_low, meta.action_high)):
        if lo > hi:
            fail(f"action_low[{i}] = {lo} exceeds action_high[{i}] = {hi}")
    if meta.control_period_s is not None and not (_finite(meta.control_period_s) and meta.control_period_s > 0):
        fail(f"control_period_s must be a finite number > 0 or null, got {meta.control_period_s!r}")
    norm = meta.subgoal_normalization
    if norm is not None and not (_finite(norm.get("norm")) and norm["norm"] > 0 and _finite(norm.get("eps", 0.0))):
        fail(f"subgoal_normalization needs a finite norm > 0 and a finite eps, got {norm!r}")
    ood = meta.ood_log_likelihood
    if ood is not None and not all(_finite(ood.get(level)) for level in LEVELS):
        fail(f"ood_log_likelihood needs finite numbers 'high' and 'low', got {ood!r}")
    rng = meta.data_range
    if rng is not None and not (isinstance(rng, dict) and all(
            isinstance(rng.get(k), list) and len(rng[k]) == meta.obs_dim and all(map(_finite, rng[k]))
            for k in ("low", "high")) and all(lo <= hi for lo, hi in zip(rng["low"], rng["high"]))):
        fail(f"data_range needs lists 'low' <= 'high' of {meta.obs_dim} finite numbers")
    if meta.value is not None:
        check_value(meta.value, fail)
    if meta.interface is not None:
        try:
            spec = meta.interface_spec()
        except ConfigError as exc:
            fail(f"interface: {exc}")
        check_interface(meta, spec, fail)


def check_value(value: ValueInfo, fail: Callable[[str], None]) -> None:
    """The value entry names value.onnx's inputs and outputs, a discount in (0, 1) and the −1/0 reward."""
    if (tuple(value.inputs), tuple(value.outputs)) != (VALUE_INPUTS, VALUE_OUTPUTS):
        fail(f"value: inputs/outputs must be {list(VALUE_INPUTS)}/{list(VALUE_OUTPUTS)}, got "
             f"{list(value.inputs)}/{list(value.outputs)}")
    if not (_finite(value.discount) and 0.0 < value.discount < 1.0):
        fail(f"value.discount must be in (0, 1), got {value.discount!r}")
    if (value.reward_per_step, value.reward_at_goal) != (REWARD_PER_STEP, REWARD_AT_GOAL):
        fail(f"value: reward_per_step/reward_at_goal must be {REWARD_PER_STEP:g}/{REWARD_AT_GOAL:g} (the reward "
             f"progress estimates invert), got {value.reward_per_step!r}/{value.reward_at_goal!r}")


def check_interface(meta: BundleMetadata, spec: InterfaceSpec, fail: Callable[[str], None]) -> None:
    """`spec` fits the bundle: the same observation and action names, its rate the control period."""
    for what, ours, theirs in (("observation", meta.observation_names, spec.observation_names),
                               ("action", meta.action_names, spec.action_names)):
        if tuple(theirs) != tuple(ours):
            fail(f"interface: its {what} has {len(theirs)} values named {list(theirs)[:3]}…, the bundle's "
                 f"{len(ours)} named {list(ours)[:3]}…")
    if meta.control_period_s is not None and not math.isclose(1.0 / spec.rate_hz, meta.control_period_s,
                                                              rel_tol=1e-6):
        fail(f"interface: rate_hz {spec.rate_hz:g} is not the bundle's control rate "
             f"({1.0 / meta.control_period_s:g} Hz)")


def load_bundle(bundle_dir: str | os.PathLike, verify_checksums: bool = True) -> Bundle:
    """Read, validate and (by default) checksum-verify a bundle; BundleError (one line) otherwise."""
    path = Path(bundle_dir)
    meta = read_metadata(path, verify_checksums)
    validate_metadata(meta, str(path / METADATA_FILE))
    bundle = Bundle(path, meta)
    for info in bundle.models():
        model = path / info.file
        if not model.is_file():
            raise BundleError(f"{path}: model file {info.file} missing")
        if verify_checksums and sha256_file(model) != info.sha256:
            raise BundleError(f"{model}: checksum mismatch (file changed or corrupted since export)")
    return bundle


def expected_shapes(meta: BundleMetadata, level: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Widths of a level's inputs (observation, condition, z) and outputs (sample, log_prob: scalar)."""
    condition = meta.goal_dim if level == "high" else meta.subgoal_dim
    return (meta.obs_dim, condition, meta.noise_dim(level)), (meta.noise_dim(level),)


def check_dims(meta: BundleMetadata, where: str, obs_dim: int | None = None, goal_dim: int | None = None,
               action_dim: int | None = None) -> None:
    """Raise BundleError if the caller's dimensions differ from the bundle's (None: not checked)."""
    for name, have, expected in (("observation", obs_dim, meta.obs_dim), ("goal", goal_dim, meta.goal_dim),
                                 ("action", action_dim, meta.action_dim)):
        if have is not None and have != expected:
            raise BundleError(f"{where}: bundle expects {name} dim {expected}, caller has {have}")


def attach_interface(bundle_dir: str | os.PathLike, spec: InterfaceSpec) -> BundleMetadata:
    """Embed (or replace) the robot interface of a verified bundle; its names become the bundle's.
    bundle.json is rewritten atomically and resealed; the models are untouched."""
    bundle = load_bundle(bundle_dir)
    meta = bundle.metadata
    for what, theirs, ours in (("observation", len(spec.observation_names), meta.obs_dim),
                               ("action", len(spec.action_names), meta.action_dim)):
        if theirs != ours:
            raise BundleError(f"{bundle.path}: this interface's {what} has {theirs} values, the bundle's {ours}")
    data = {**to_dict(meta), "interface": to_dict(spec), "observation_names": list(spec.observation_names),
            "goal_names": list(spec.observation_names), "action_names": list(spec.action_names)}
    new = from_dict(BundleMetadata, data, "bundle metadata")
    validate_metadata(new, f"{bundle.path / METADATA_FILE} with this interface")
    save_json(bundle.path / METADATA_FILE, sealed(to_dict(new)))
    return new
