"""ValueRuntime: batch-1 and batched calls, input and output checks, bundles without a value model,
bad value entries rejected (by every loader) in one line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import bundle_copy, edit_metadata, exported

from nfhiql_core.deploy.bundle import BundleError, load_bundle
from nfhiql_core.deploy.runtime import InputShapeError, NonFiniteOutputError, PolicyRuntime
from nfhiql_core.deploy.value_runtime import ValueRuntime

CPU = ["CPUExecutionProvider"]
SHIPPED = Path(__file__).resolve().parents[1] / "bundles"


@pytest.fixture(scope="module")
def runtime() -> ValueRuntime:
    return ValueRuntime.from_bundle(exported("flow", "rep")[1], CPU)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


def test_single_and_batched_values_agree(runtime: ValueRuntime) -> None:
    rng = np.random.default_rng(0)
    obs, goals = (rng.uniform(0, 20, (5, 2)).astype(np.float32) for _ in range(2))
    batch = runtime.values(obs, goals)
    assert batch.shape == (5,) and batch.dtype == np.float32
    singles = [runtime.value(o, g) for o, g in zip(obs, goals)]
    assert all(isinstance(v, float) for v in singles)
    np.testing.assert_allclose(singles, batch, atol=1e-6)
    assert runtime.value(obs[1].astype(np.float64).tolist(), goals[1]) == singles[1]  # any array-like, cast once


def test_bad_inputs_and_non_finite_values_raise(runtime: ValueRuntime) -> None:
    with pytest.raises(InputShapeError) as e:
        runtime.value(np.zeros(3), np.zeros(2))
    assert "observation has shape (3,), expected (2,)" in one_line(e)
    with pytest.raises(InputShapeError) as e:
        runtime.values(np.zeros((4, 2)), np.zeros((3, 2)))
    assert "goals" in one_line(e)
    with pytest.raises(NonFiniteOutputError) as e:
        runtime.value(np.array([np.nan, 0.0]), np.zeros(2))
    assert "non-finite V(s, g)" in one_line(e)
    with pytest.raises(NonFiniteOutputError) as e:
        runtime.values(np.array([[0.0, 0.0], [np.inf, 0.0]]), np.zeros((2, 2)))
    assert "rows [1]" in one_line(e)


@pytest.mark.parametrize("name", ["cube-single-play", "pointmaze-medium-navigate"])
def test_shipped_bundles_carry_a_value_model_and_run_without_one(tmp_path, name: str) -> None:
    """The shipped bundles give progress estimates; a bundle exported before value.onnx (no `value`
    entry) has no value runtime and its policy runs as before."""
    assert ValueRuntime.from_bundle(SHIPPED / name, CPU) is not None
    bundle = shutil.copytree(SHIPPED / name, tmp_path / name)
    (bundle / "value.onnx").unlink()
    edit_metadata(bundle, value=None)
    assert load_bundle(bundle).metadata.value is None
    assert ValueRuntime.from_bundle(bundle, CPU) is None
    runtime = PolicyRuntime(bundle, CPU)
    meta = runtime.metadata
    assert meta.value is None
    assert np.isfinite(runtime.act(np.zeros(meta.obs_dim), np.zeros(meta.subgoal_dim)).action).all()


def _value_entry(bundle: Path, **changes) -> None:
    value = json.loads((bundle / "bundle.json").read_text())["value"]
    edit_metadata(bundle, value={k: v for k, v in {**value, **changes}.items() if v is not None})


def _wrong_obs_dim(bundle: Path) -> None:
    """obs_dim 3 (names to match, no interface): value.onnx's declared width 2 contradicts it."""
    edit_metadata(bundle, obs_dim=3, goal_dim=3, observation_names=["a", "b", "c"], goal_names=["a", "b", "c"],
                  interface=None)


BAD_VALUES = {
    "discount out of range": (lambda b: _value_entry(b, discount=1.5), "value.discount must be in (0, 1), got 1.5"),
    "another reward": (lambda b: _value_entry(b, reward_per_step=0.0, reward_at_goal=1.0),
                       "value: reward_per_step/reward_at_goal must be -1/0"),
    "renamed input": (lambda b: _value_entry(b, inputs=["observation", "subgoal"]),
                      "value: inputs/outputs must be ['observation', 'goal']/['value']"),
    "missing discount": (lambda b: _value_entry(b, discount=None), "missing required key value.discount"),
    "not a mapping": (lambda b: edit_metadata(b, value="value.onnx"), "value: expected a mapping, got str"),
    "missing model": (lambda b: (b / "value.onnx").unlink(), "model file value.onnx missing"),
    "checksum mismatch": (lambda b: (b / "value.onnx").open("ab").write(b"\0"), "value.onnx: checksum mismatch"),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_value_entries_are_rejected_in_one_line(tmp_path, case: str) -> None:
    damage, expected = BAD_VALUES[case]
    bundle = bundle_copy(tmp_path)
    damage(bundle)
    for load in (lambda: ValueRuntime.from_bundle(bundle, CPU), lambda: PolicyRuntime(bundle, CPU)):
        with pytest.raises(BundleError) as e:
            load()
        assert expected in one_line(e)


def test_a_value_model_of_other_dimensions_is_refused_at_load(tmp_path) -> None:
    bundle = bundle_copy(tmp_path)
    _wrong_obs_dim(bundle)
    with pytest.raises(BundleError) as e:
        ValueRuntime.from_bundle(bundle, CPU)
    assert "value.onnx: model input 'observation' has shape ['batch', 2], but bundle.json's dims say (batch, 3)" \
        in one_line(e)
