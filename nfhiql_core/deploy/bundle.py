"""Policy bundle: a directory with the two policies as ONNX models and `bundle.json` describing them.

    BUNDLE_DIR/
      bundle.json   metadata (`BundleMetadata`): dims, names, action bounds, subgoal space and its
                    normalisation, subgoal steps, control period, env, training config, checksums
      high.onnx     (observation, goal, z)    -> (subgoal, log_prob)   subgoal already normalised
      low.onnx      (observation, subgoal, z) -> (action, log_prob)    action NOT clipped (see runtime)

Both models take the base noise z as an input (z = 0: the deterministic policy) and have a
dynamic batch dimension. `load_bundle` validates everything a runtime relies on and fails with a
one-line `BundleError`. Written by `nfhiql_core.training.export`, read by `nfhiql_core.deploy.runtime`; this module
needs neither torch nor onnxruntime.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nfhiql_core.checksums import sha256_file
from nfhiql_core.config import from_dict
from nfhiql_core.errors import ConfigError, NfhiqlError

FORMAT = "nfhiql-bundle/1"
METADATA_FILE = "bundle.json"
LEVELS = ("high", "low")
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
class SourceCheckpoint:
    """The checkpoint the bundle was exported from."""

    path: str
    sha256: str


@dataclass(frozen=True)
class ParityReport:
    """Export-time check of ORT against torch over batch sizes × {z = 0, z ~ N(0, I)}.

    Keys are 'high.subgoal', 'high.log_prob', 'low.action', 'low.log_prob'. `max_abs_diff` is
    max |ORT − torch float32|, `torch_float32_error` is max |torch float32 − torch float64| on the
    same inputs; the check passed: max_abs_diff ≤ atol + 2 · torch_float32_error for every output.
    """

    atol: float
    batch_sizes: tuple[int, ...]
    max_abs_diff: dict[str, float]
    torch_float32_error: dict[str, float]


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
    ood_log_likelihood: dict[str, Any] | None = None  # absent in bundles from before the OOD alarm

    def model(self, level: str) -> ModelInfo:
        """The ModelInfo of level 'high' or 'low'."""
        return self.high if level == "high" else self.low

    def noise_dim(self, level: str) -> int:
        """Dimension of the base noise z of a level (= its output dimension)."""
        return self.subgoal_dim if level == "high" else self.action_dim

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


def read_metadata(bundle_dir: str | os.PathLike) -> BundleMetadata:
    """Parse and type-check bundle.json (no checksum verification)."""
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
    try:
        return from_dict(BundleMetadata, data, str(path))
    except ConfigError as exc:
        raise BundleError(str(exc)) from None


def validate_metadata(meta: BundleMetadata, where: str) -> None:
    """Check the internal consistency of the metadata (lengths, bounds, opset)."""
    if not MIN_OPSET <= meta.opset <= MAX_OPSET:
        raise BundleError(f"{where}: unsupported ONNX opset {meta.opset} (supported: {MIN_OPSET}..{MAX_OPSET})")
    for field, dim in (("observation_names", meta.obs_dim), ("goal_names", meta.goal_dim),
                       ("action_names", meta.action_dim), ("action_low", meta.action_dim),
                       ("action_high", meta.action_dim)):
        if len(getattr(meta, field)) != dim:
            raise BundleError(f"{where}: {field} has {len(getattr(meta, field))} entries, expected {dim}")
    if any(lo > hi for lo, hi in zip(meta.action_low, meta.action_high)):
        raise BundleError(f"{where}: action_low exceeds action_high")
    ood = meta.ood_log_likelihood
    if ood is not None and not all(isinstance(ood.get(level), (int, float)) and not isinstance(ood.get(level), bool)
                                   and math.isfinite(ood[level]) for level in LEVELS):
        raise BundleError(f"{where}: ood_log_likelihood needs finite numbers 'high' and 'low', got {ood!r}")


def load_bundle(bundle_dir: str | os.PathLike, verify_checksums: bool = True) -> Bundle:
    """Read, validate and (by default) checksum-verify a bundle; BundleError (one line) otherwise."""
    path = Path(bundle_dir)
    meta = read_metadata(path)
    validate_metadata(meta, str(path / METADATA_FILE))
    for level in LEVELS:
        model = path / meta.model(level).file
        if not model.is_file():
            raise BundleError(f"{path}: model file {meta.model(level).file} missing")
        if verify_checksums and sha256_file(model) != meta.model(level).sha256:
            raise BundleError(f"{model}: checksum mismatch (file changed or corrupted since export)")
    return Bundle(path, meta)


def check_dims(meta: BundleMetadata, where: str, obs_dim: int | None = None, goal_dim: int | None = None,
               action_dim: int | None = None) -> None:
    """Raise BundleError if the caller's dimensions differ from the bundle's (None: not checked)."""
    for name, have, expected in (("observation", obs_dim, meta.obs_dim), ("goal", goal_dim, meta.goal_dim),
                                 ("action", action_dim, meta.action_dim)):
        if have is not None and have != expected:
            raise BundleError(f"{where}: bundle expects {name} dim {expected}, caller has {have}")
