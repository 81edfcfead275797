"""Run a bundle's value model with ONNX Runtime: HIQL's V(s, g), for progress estimates.

V(s, g) is the value the agent's actor advantages use (the mean of the online value heads on the
goal representation φ(s, g)), for the reward in bundle.json's `value` entry: −1 per step until the
goal, 0 at it; `nfhiql_core.control.progress` turns it into steps to go. No torch and no ROS.
`value` is the batch-1 call (preallocated inputs), `values` the batched one; a non-finite value
raises `NonFiniteOutputError`, as a policy's non-finite output does.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np

from nfhiql_core.deploy import DEFAULT_PROVIDERS
from nfhiql_core.deploy.bundle import BundleError, ValueInfo, load_bundle
from nfhiql_core.deploy.runtime import (
    InputShapeError,
    NonFiniteOutputError,
    _as_batch,
    _check_widths,
    create_session,
)

log = logging.getLogger(__name__)


class ValueRuntime:
    """V(s, g) from value.onnx; `discount` is the γ it was trained with.

    The model's input/output names and declared widths are checked against `info` and the bundle's
    dimensions at load time, not on the first call.
    """

    def __init__(self, path: str | os.PathLike, info: ValueInfo, obs_dim: int, goal_dim: int,
                 providers: Sequence[Any] = DEFAULT_PROVIDERS, intra_op_threads: int = 1):
        self.session = create_session(path, providers, (), intra_op_threads)
        found = (tuple(i.name for i in self.session.get_inputs()), tuple(o.name for o in self.session.get_outputs()))
        if found != (tuple(info.inputs), tuple(info.outputs)):
            raise BundleError(f"{path}: model inputs/outputs {found} differ from bundle.json's "
                              f"{(tuple(info.inputs), tuple(info.outputs))}")
        _check_widths(path, self.session, (obs_dim, goal_dim), ())  # value: (batch,)
        self.discount = float(info.discount)
        self.obs_dim, self.goal_dim = obs_dim, goal_dim
        self._observation = np.zeros((1, obs_dim), np.float32)
        self._goal = np.zeros((1, goal_dim), np.float32)
        self._feed = dict(zip(info.inputs, (self._observation, self._goal)))

    @classmethod
    def from_bundle(cls, bundle_dir: str | os.PathLike, providers: Sequence[Any] = DEFAULT_PROVIDERS,
                    intra_op_threads: int = 1) -> "ValueRuntime | None":
        """The bundle's value model (the bundle verified first); None when it was exported without one."""
        bundle = load_bundle(bundle_dir)
        meta = bundle.metadata
        if meta.value is None:
            log.info("%s: no value model in the bundle (exported before value.onnx): no progress estimates",
                     bundle_dir)
            return None
        return cls(bundle.path / meta.value.file, meta.value, meta.obs_dim, meta.goal_dim, providers,
                   intra_op_threads)

    @property
    def providers(self) -> list[str]:
        """The execution providers that actually run the model, in priority order."""
        return self.session.get_providers()

    def value(self, observation: np.ndarray, goal: np.ndarray) -> float:
        """V(s, g) of one observation (obs_dim,) and goal (goal_dim,)."""
        for name, x, array in (("observation", observation, self._observation), ("goal", goal, self._goal)):
            if np.shape(x) != array.shape[1:]:
                raise InputShapeError(f"{name} has shape {np.shape(x)}, expected {array.shape[1:]}")
            array[0] = x
        return float(self._check_finite(self.session.run(None, self._feed)[0])[0])

    def values(self, observations: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """V(s, g) of a batch: observations (B, obs_dim), goals (B, goal_dim) → (B,)."""
        batch = len(observations)
        feed = dict(zip(self._feed, (_as_batch("observations", observations, (batch, self.obs_dim), False),
                                     _as_batch("goals", goals, (batch, self.goal_dim), False))))
        return self._check_finite(self.session.run(None, feed)[0])

    @staticmethod
    def _check_finite(values: np.ndarray) -> np.ndarray:
        bad = ~np.isfinite(values)
        if bad.any():
            raise NonFiniteOutputError(f"value model produced a non-finite V(s, g) (batch rows "
                                       f"{np.flatnonzero(bad).tolist()[:8]})")
        return values
