"""PolicyRuntime: providers, determinism, clipping, non-finite outputs, bad bundles, evaluation
through the bundle (equal to the checkpoint's), re-planning, and the inference benchmark."""
from __future__ import annotations

import json
import logging
import threading

import numpy as np
import onnxruntime as ort
import pytest
import torch
from bundle_helpers import KINDS, MAZE, bundle_copy, edit_metadata, exported, fitted_agent

import nfhiql_core.deploy.runtime as runtime_module
from nfhiql_core.algo.agent import TorchPolicy
from nfhiql_core.bench.inference import bench_inference
from nfhiql_core.checksums import sha256_file
from nfhiql_core.deploy.bundle import BundleError
from nfhiql_core.deploy.runtime import BundlePolicy, InputShapeError, NonFiniteOutputError, PolicyRuntime, ProviderError
from nfhiql_core.evaluation.bundle_eval import evaluate_bundle, replan_table
from nfhiql_core.evaluation.protocol import evaluate

CPU = ["CPUExecutionProvider"]
NO_CUDA = "CUDAExecutionProvider" not in ort.get_available_providers()


@pytest.fixture(scope="module")
def runtime() -> PolicyRuntime:
    return PolicyRuntime(exported("flow", "rep")[1], CPU)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


@pytest.mark.skipif(not NO_CUDA, reason="checks the CPU fallback on a machine without CUDA")
def test_default_providers_report_cpu_fallback(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="nfhiql_core.deploy.runtime"):
        rt = PolicyRuntime(exported("flow", "rep")[1])
    assert rt.providers == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider is not available" in caplog.text
    with pytest.raises(ProviderError) as e:
        PolicyRuntime(exported("flow", "rep")[1], required_providers=["CUDAExecutionProvider"])
    assert "CUDAExecutionProvider" in one_line(e)


@pytest.mark.filterwarnings("ignore:Specified provider 'TensorrtExecutionProvider'")
def test_silent_ort_fallback_is_reported_and_required_provider_enforced(monkeypatch) -> None:
    """A provider the build lists but that fails to start: ORT runs on CPU without raising."""
    available = ["TensorrtExecutionProvider", *ort.get_available_providers()]
    monkeypatch.setattr(runtime_module.ort, "get_available_providers", lambda: available)
    bundle = exported("flow", "rep")[1]
    rt = PolicyRuntime(bundle, [("TensorrtExecutionProvider", {"trt_fp16_enable": False}), "CPUExecutionProvider"])
    assert rt.providers == ["CPUExecutionProvider"]
    with pytest.raises(ProviderError) as e:
        PolicyRuntime(bundle, ["TensorrtExecutionProvider", "CPUExecutionProvider"],
                      required_providers=["TensorrtExecutionProvider"])
    assert "failed to start" in one_line(e)


def test_unknown_provider_rejected() -> None:
    with pytest.raises(ProviderError) as e:
        PolicyRuntime(exported("flow", "rep")[1], ["NoSuchExecutionProvider"])
    assert "NoSuchExecutionProvider" in one_line(e)


def test_single_and_batched_calls_agree_and_are_deterministic(runtime: PolicyRuntime) -> None:
    rng = np.random.default_rng(1)
    obs, goals = (rng.uniform(0, 20, (5, 2)).astype(np.float32) for _ in range(2))
    batch = runtime.plan(obs, goals)
    single = runtime.plan(obs[2], goals[2])
    assert single.subgoal.shape == (2,) and np.ndim(single.log_prob) == 0
    np.testing.assert_allclose(single.subgoal, batch.subgoal[2], atol=1e-6)
    np.testing.assert_array_equal(runtime.plan(obs, goals).subgoal, batch.subgoal)
    np.testing.assert_array_equal(runtime.plan(obs, goals, np.zeros((5, 2))).subgoal, batch.subgoal)
    acts = runtime.act(obs, batch.subgoal)
    assert acts.action.shape == (5, 2) and acts.log_prob.shape == (5,)
    np.testing.assert_allclose(runtime.act(obs[2], batch.subgoal[2]).action, acts.action[2], atol=1e-6)


def test_single_calls_return_their_own_arrays_also_from_concurrent_threads(runtime: PolicyRuntime) -> None:
    """Single samples run through buffers bound at load: results are copies, and calls from several threads
    (each level behind its lock) give what the batched call gives."""
    rng = np.random.default_rng(2)
    obs, goals = (rng.uniform(0, 20, (8, 2)).astype(np.float32) for _ in range(2))
    batch = runtime.plan(obs, goals)
    first = runtime.plan(obs[0], goals[0])
    kept = first.subgoal.copy()
    runtime.plan(obs[1], goals[1])
    np.testing.assert_array_equal(first.subgoal, kept)
    results: dict[int, list[np.ndarray]] = {}

    def work(row: int) -> None:
        results[row] = [runtime.plan(obs[row], goals[row]).subgoal for _ in range(50)]

    threads = [threading.Thread(target=work, args=(row,)) for row in range(len(obs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    for row, subgoals in results.items():
        for subgoal in subgoals:
            np.testing.assert_allclose(subgoal, batch.subgoal[row], atol=1e-6)
    assert len(results) == len(obs)


def test_seeded_sampling_is_reproducible() -> None:
    bundle = exported("flow", "rep")[1]
    obs = np.full((4, 2), 3.0, dtype=np.float32)
    draws = [PolicyRuntime(bundle, CPU, temperature=1.0, seed=s).plan(obs, obs + 5).subgoal for s in (7, 7, 8)]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.allclose(draws[0], draws[2])


def test_actions_clipped_with_log_prob_of_unclipped_sample(runtime: PolicyRuntime) -> None:
    agent = fitted_agent("flow", "rep")
    obs = np.zeros((3, 2), dtype=np.float32)
    subgoal = runtime.plan(obs, obs + 10).subgoal
    z = np.array([[30.0, 30.0], [-30.0, -30.0], [0.0, 0.0]], dtype=np.float32)
    out = runtime.act(obs, subgoal, z)
    raw, log_prob = agent.low_actor.sample_with_log_prob(torch.cat([torch.zeros(3, 2), torch.from_numpy(subgoal)], -1),
                                                         torch.from_numpy(z))
    raw = raw.detach().numpy()
    assert np.abs(raw[:2]).max() > 1.0 and np.abs(out.action).max() <= 1.0
    np.testing.assert_allclose(out.action, np.clip(raw, -1.0, 1.0), atol=1e-5)
    np.testing.assert_allclose(out.log_prob, log_prob.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_non_finite_outputs_raise(runtime: PolicyRuntime) -> None:
    obs = np.array([[1.0, 2.0], [np.nan, 0.0]], dtype=np.float32)
    with pytest.raises(NonFiniteOutputError) as e:
        runtime.plan(obs, np.zeros((2, 2)))
    assert "rows [1]" in one_line(e)
    with pytest.raises(NonFiniteOutputError):
        runtime.act(np.zeros(2), np.ones(2), z=np.array([np.inf, 0.0]))


def test_input_shape_mismatch(runtime: PolicyRuntime) -> None:
    with pytest.raises(InputShapeError) as e:
        runtime.plan(np.zeros((3, 5)), np.zeros((3, 2)))
    assert "observation" in one_line(e)
    with pytest.raises(InputShapeError):
        runtime.act(np.zeros((3, 2)), np.zeros((2, 2)))


def _set_element(bundle, field: str, index: int, value: float) -> None:
    values = json.loads((bundle / "bundle.json").read_text())[field]
    values[index] = value
    edit_metadata(bundle, **{field: values})


def _wrong_obs_dim(bundle) -> None:
    """obs_dim (and its names, so the metadata is consistent; no robot interface to disagree with)
    disagree with the ONNX models."""
    meta = json.loads((bundle / "bundle.json").read_text())
    dim = meta["obs_dim"] + 1
    edit_metadata(bundle, obs_dim=dim, goal_dim=dim, observation_names=[f"o{i}" for i in range(dim)],
                   goal_names=[f"g{i}" for i in range(dim)], interface=None)


def _corrupt_model(bundle) -> None:
    """Garbage model whose checksum is updated: only onnxruntime can notice."""
    (bundle / "low.onnx").write_bytes(b"\x08\x07garbage")
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["low"]["sha256"] = sha256_file(bundle / "low.onnx")
    edit_metadata(bundle, low=meta["low"])


BAD_BUNDLES = {
    "missing model": (lambda b: (b / "high.onnx").unlink(), "high.onnx missing"),
    "checksum mismatch": (lambda b: (b / "low.onnx").open("ab").write(b"\0"), "checksum mismatch"),
    "no metadata": (lambda b: (b / "bundle.json").unlink(), "not a policy bundle"),
    "bad json": (lambda b: (b / "bundle.json").write_text("{"), "not valid JSON"),
    "future format": (lambda b: edit_metadata(b, format="nfhiql-bundle/9"), "unsupported bundle format"),
    "unsupported opset": (lambda b: edit_metadata(b, opset=99), "unsupported ONNX opset 99"),
    "missing field": (lambda b: edit_metadata(b, obs_dim=None), "obs_dim"),
    "names/dims disagree": (lambda b: edit_metadata(b, action_names=["a"]), "action_names has 1 entries"),
    "unloadable model": (_corrupt_model, "onnxruntime cannot load"),
    "edited, not resealed": (lambda b: edit_metadata(b, reseal=False, subgoal_steps=3), "metadata_sha256 mismatch"),
    "no metadata checksum": (lambda b: _drop_digest(b), "metadata_sha256 missing"),
    "NaN bound": (lambda b: _set_element(b, "action_low", 1, float("nan")), "action_low[1] is nan"),
    "infinite bound": (lambda b: _set_element(b, "action_high", 0, float("inf")), "action_high[0] is inf"),
    "inverted bounds": (lambda b: _set_element(b, "action_low", 0, 5.0), "action_low[0] = 5.0 exceeds action_high[0]"),
    "zero subgoal_steps": (lambda b: edit_metadata(b, subgoal_steps=0), "subgoal_steps must be >= 1, got 0"),
    "negative period": (lambda b: edit_metadata(b, control_period_s=-0.1), "control_period_s must be"),
    "NaN OOD threshold": (lambda b: edit_metadata(b, ood_log_likelihood={"high": float("nan"), "low": 0.0}),
                          "ood_log_likelihood needs finite"),
    "inverted data range": (lambda b: edit_metadata(b, data_range={"low": [1.0, 1.0], "high": [0.0, 2.0]}),
                            "data_range needs lists 'low' <= 'high' of 2 finite numbers"),
    "interface of another robot": (lambda b: edit_metadata(b, interface={**json.loads(
        (b / "bundle.json").read_text())["interface"], "rate_hz": 5.0}), "interface: rate_hz 5 is not the bundle's"),
    "obs_dim disagrees with the models": (_wrong_obs_dim, "model input 'observation' has shape ['batch', 2], but "
                                          "bundle.json's dims say (batch, 3)"),
}


def _drop_digest(bundle) -> None:
    path = bundle / "bundle.json"
    data = json.loads(path.read_text())
    data.pop("metadata_sha256")
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case", BAD_BUNDLES)
def test_bad_bundles_rejected_with_one_line_errors(tmp_path, case: str) -> None:
    damage, expected = BAD_BUNDLES[case]
    bundle = bundle_copy(tmp_path)
    damage(bundle)
    with pytest.raises(BundleError) as e:
        PolicyRuntime(bundle, CPU)
    assert expected in one_line(e)


def test_dimension_mismatch_with_caller_rejected(tmp_path) -> None:
    with pytest.raises(BundleError) as e:
        PolicyRuntime(exported("flow", "rep")[1], CPU, obs_dim=29)
    assert "observation dim 2, caller has 29" in one_line(e)
    with pytest.raises(BundleError) as e:
        PolicyRuntime(tmp_path / "nowhere", CPU)
    assert "not found" in one_line(e)
    with pytest.raises(BundleError):
        evaluate_bundle(PolicyRuntime(exported("flow", "rep")[1], CPU), "antmaze-medium-navigate")


@pytest.mark.parametrize("policy,space", KINDS)
def test_bundle_eval_equals_checkpoint_eval(policy: str, space: str) -> None:
    kw = dict(episodes_per_task=2, max_steps=150, seed=3, progress=False)
    torch_result = evaluate(TorchPolicy(fitted_agent(policy, space)), MAZE, **kw)
    bundle_result = evaluate_bundle(PolicyRuntime(exported(policy, space)[1], CPU), replan_every=1, **kw)
    assert bundle_result.episodes == torch_result.episodes  # success, length and seed of every episode
    successes = [e.success for e in torch_result.episodes]
    assert any(successes) and not all(successes)
    assert len({e.length for e in torch_result.episodes}) > 1


def test_replan_every_n_steps(runtime: PolicyRuntime, monkeypatch) -> None:
    planned_rows = []
    real_plan = runtime.plan
    monkeypatch.setattr(runtime, "plan", lambda obs, goals: planned_rows.append(len(obs)) or real_plan(obs, goals))
    policy = BundlePolicy(runtime, replan_every=5)
    result = evaluate(policy, MAZE, episodes_per_task=2, task_ids=[3], num_envs=1, max_steps=23, progress=False)
    assert [e.length for e in result.episodes] == [23, 23]
    assert planned_rows == [1] * 10  # steps 0, 5, 10, 15, 20 of each episode; reset re-plans at once
    with pytest.raises(ValueError):
        BundlePolicy(runtime, replan_every=0)


def test_bench_inference_of_a_shipped_bundle_needs_no_checkpoint_and_no_torch(tmp_path) -> None:
    """On any machine: a copy of the shipped bundle, its checkpoint absent, torch unimportable."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    bundle = shutil.copytree(Path(__file__).resolve().parents[1] / "bundles" / "cube-single-play", tmp_path / "b")
    code = ("import sys; sys.modules['torch'] = None\n"
            "from nfhiql_core.bench.inference import bench_inference\n"
            f"rows = bench_inference({str(bundle)!r}, calls=20, warmup=2)\n"
            "print(sorted((r['call'], r['runtime']) for r in rows))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "[('act', 'runtime.act'), ('act', 'session.run'), ('plan', 'runtime.plan'), ('plan', 'session.run')]" \
        in out.stdout


def test_bench_inference_and_replan_table_run(runtime: PolicyRuntime, capsys) -> None:
    checkpoint, bundle = exported("flow", "rep")
    rows = bench_inference(str(bundle), calls=30, warmup=3, checkpoint=str(checkpoint))
    torch_eager = f"torch {torch.__version__} eager"
    assert [(r["call"], r["runtime"]) for r in rows] == [
        ("plan", "runtime.plan"), ("plan", "session.run"), ("plan", torch_eager),
        ("act", "runtime.act"), ("act", "session.run"), ("act", torch_eager)]
    assert all(0 < r["p50_us"] <= r["p99_us"] <= r["max_us"] for r in rows)
    table = replan_table(runtime, intervals=(1, 5), episodes_per_task=1, task_ids=[1], max_steps=20,
                         progress=False)
    assert [r["replan_every"] for r in table] == [1, 5]
    out = capsys.readouterr().out
    assert "p99" in out and "replan every" in out
