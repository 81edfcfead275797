"""`export_bundle`: round-trip parity (EMA policies and the flow options included), metadata, single-file models,
the value model, atomic publishing."""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
from bundle_helpers import KINDS, MAZE, exported, fitted_agent
from torch import nn

import nfhiql_core.training.export as export_module
from nfhiql_core.algo.agent import AgentConfig, HIQLAgent
from nfhiql_core.checksums import sha256_file
from nfhiql_core.deploy.bundle import FORMAT, load_bundle
from nfhiql_core.deploy.runtime import PolicyRuntime
from nfhiql_core.deploy.value_runtime import ValueRuntime
from nfhiql_core.errors import OutputExistsError
from nfhiql_core.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nfhiql_core.training.export import ExportError, export_bundle
from nfhiql_core.training.train import DatasetConfig, TrainConfig


@pytest.mark.parametrize("policy,space", KINDS)
def test_runtime_matches_torch_agent(policy: str, space: str) -> None:
    """ORT (through the runtime) vs HIQLAgent.plan/act: batch 1, 7, 64; z = 0 and random z."""
    agent = fitted_agent(policy, space)
    runtime = PolicyRuntime(exported(policy, space)[1], ["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch in (1, 7, 64):
        for z_scale in (0.0, 1.0):
            obs, goals = (rng.uniform(-2, 22, (batch, 2)).astype(np.float32) for _ in range(2))
            z_high, z_low = (z_scale * rng.standard_normal((batch, d)).astype(np.float32)
                             for d in (agent.subgoal_dim, 2))
            subgoal, lp_high = agent.plan(*map(torch.from_numpy, (obs, goals, z_high)))
            action, lp_low = agent.act(torch.from_numpy(obs), subgoal, torch.from_numpy(z_low))
            got_plan = runtime.plan(obs, goals, z_high)
            got_act = runtime.act(obs, subgoal.numpy(), z_low)
            pairs = [(got_plan.subgoal, subgoal), (got_plan.log_prob, lp_high), (got_act.action, action),
                     (got_act.log_prob, lp_low)]
            worst = max(worst, *(float(np.abs(g - e.numpy()).max()) for g, e in pairs))
    assert worst <= 1e-5


@pytest.mark.parametrize("policy,space", KINDS)
def test_metadata_complete(policy: str, space: str) -> None:
    checkpoint, bundle_dir = exported(policy, space)
    meta = load_bundle(bundle_dir).metadata
    ckpt = load_checkpoint(checkpoint)
    assert meta.format == FORMAT and (meta.policy, meta.subgoal_space) == (policy, space)
    assert (meta.obs_dim, meta.goal_dim, meta.subgoal_dim, meta.action_dim) == (2, 2, 2, 2)  # rep_dim 2
    assert meta.observation_names == meta.goal_names == ("x", "y") and meta.action_names == ("dx", "dy")
    assert meta.action_low == (-1.0, -1.0) and meta.action_high == (1.0, 1.0)
    assert meta.subgoal_steps == 10 and meta.control_period_s == pytest.approx(0.1)
    if space == "rep":
        assert meta.subgoal_normalization["kind"] == "length"
        assert meta.subgoal_normalization["norm"] == pytest.approx(math.sqrt(2))
    else:
        assert meta.subgoal_normalization is None
    assert meta.env == MAZE and meta.step == ckpt.step == 300 and meta.training_config == ckpt.config
    assert meta.source_checkpoint.sha256 == sha256_file(checkpoint)
    assert meta.high.sha256 == sha256_file(bundle_dir / "high.onnx")
    assert meta.low.sha256 == sha256_file(bundle_dir / "low.onnx")
    assert meta.value.sha256 == sha256_file(bundle_dir / "value.onnx")
    assert (meta.value.discount, meta.value.reward_per_step, meta.value.reward_at_goal) == (0.99, -1.0, 0.0)
    assert meta.opset == export_module.OPSET and {"torch", "onnx", "onnxruntime", "nfhiql"} <= set(meta.versions)
    assert meta.parity.batch_sizes == (1, 7, 64)
    assert set(meta.parity.max_abs_diff) == {"high.subgoal", "high.log_prob", "low.action", "low.log_prob",
                                             "value.value"}
    parity = meta.parity
    for key, diff in parity.max_abs_diff.items():  # the recorded numbers pass the recorded check
        assert diff <= parity.atol + parity.rtol * parity.output_magnitude[key] + 2 * parity.torch_float32_error[key]
    assert max(parity.max_abs_diff.values()) <= 1e-4  # outputs of magnitude ≤ 10: float32 rounding, no more
    assert meta.parity.rtol == export_module.PARITY_RTOL and meta.parity.output_magnitude.keys() == \
        meta.parity.max_abs_diff.keys() and min(meta.parity.output_magnitude.values()) > 0
    raw = json.loads((bundle_dir / "bundle.json").read_text())
    assert raw["source_checkpoint"]["path"] == checkpoint.name  # no machine's path in a bundle
    assert raw["value"] == {"file": "value.onnx", "sha256": meta.value.sha256, "inputs": ["observation", "goal"],
                            "outputs": ["value"], "discount": 0.99, "reward_per_step": -1.0, "reward_at_goal": 0.0}


@pytest.mark.parametrize("policy,space", KINDS)
def test_value_model_matches_the_agents_goal_value(policy: str, space: str) -> None:
    """value.onnx through ValueRuntime vs HIQLAgent.goal_value (the mean of the online heads on φ(s, g)):
    batch 1, 7, 64, and the batch-1 call."""
    agent = fitted_agent(policy, space)
    runtime = ValueRuntime.from_bundle(exported(policy, space)[1], ["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 7, 64):
        obs, goals = (rng.uniform(-2, 22, (batch, 2)).astype(np.float32) for _ in range(2))
        expected = agent.goal_value(torch.from_numpy(obs), torch.from_numpy(goals)).numpy()
        heads = agent.value(torch.from_numpy(obs), agent.goal_rep(torch.from_numpy(obs), torch.from_numpy(goals)))
        assert heads.shape == (2, batch) and np.allclose(expected, heads.detach().mean(0).numpy())
        np.testing.assert_allclose(runtime.values(obs, goals), expected, rtol=0, atol=1e-5)
        assert runtime.value(obs[0], goals[0]) == pytest.approx(float(expected[0]), abs=1e-5)
    assert runtime.discount == agent.config.discount


def test_models_are_single_file_with_dynamic_batch() -> None:
    bundle_dir = exported("flow", "rep")[1]
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["bundle.json", "high.onnx", "low.onnx", "value.onnx"]
    runtime = PolicyRuntime(bundle_dir, ["CPUExecutionProvider"])
    sessions = {**{level: runtime.levels[level].session for level in ("high", "low")},
                "value": ValueRuntime.from_bundle(bundle_dir, ["CPUExecutionProvider"]).session}
    for model_name, names in (("high", ["observation", "goal", "z"]), ("low", ["observation", "subgoal", "z"]),
                              ("value", ["observation", "goal"])):
        model = onnx.load(str(bundle_dir / f"{model_name}.onnx"), load_external_data=False)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
        inputs = sessions[model_name].get_inputs()
        assert [i.name for i in inputs] == names
        assert all(isinstance(i.shape[0], str) for i in inputs)  # symbolic batch dimension
    assert [o.shape for o in sessions["value"].get_outputs()] == [[inputs[0].shape[0]]]  # value: (batch,)


def test_refuses_non_empty_output_unless_forced(tmp_path) -> None:
    checkpoint = exported("gaussian", "state")[0]
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        export_bundle(checkpoint, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    export_bundle(checkpoint, out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["bundle.json", "high.onnx", "low.onnx", "value.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary or old directories left


class _Shifted(nn.Module):
    """An 'exporter bug': the wrapped level's sample is off by 1e-3."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, observation: torch.Tensor, condition: torch.Tensor, z: torch.Tensor):
        out, log_prob = self.module(observation, condition, z)
        return out + 1e-3, log_prob


class _ShiftedValue(_Shifted):
    """The same bug in the value model (the exporter matches its two inputs to forward's arguments)."""

    def forward(self, observation: torch.Tensor, goal: torch.Tensor):
        return self.module(observation, goal) + 1e-3


@pytest.mark.parametrize("model,output,shifted", [("low", "low.action", _Shifted),
                                                  ("value", "value.value", _ShiftedValue)])
def test_failed_parity_check_writes_nothing(tmp_path, monkeypatch, model: str, output: str, shifted: type) -> None:
    checkpoint = exported("gaussian", "state")[0]
    real = export_module.export_level
    monkeypatch.setattr(export_module, "export_level",
                        lambda module, *args: real(shifted(module) if args[2] == model else module, *args))
    with pytest.raises(ExportError) as e:
        export_bundle(checkpoint, tmp_path / "bundle")
    assert output in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_recipe_without_the_step_penalty_exports_no_value_model(tmp_path, caplog) -> None:
    """sampler.gc_negative: false trains V on 0 per step / 1 at the goal, which steps-to-go does not invert."""
    agent_config = AgentConfig(actor_hidden_dims=(8,), value_hidden_dims=(8,), flow_hidden_dims=(8,),
                               flow_encode_dim=4, flow_blocks=1, rep_dim=2)
    torch.manual_seed(0)
    checkpoint = tmp_path / "positive.pt"
    recipe = TrainConfig(run_dir="unused", dataset=DatasetConfig(path="unused.npz"), agent=agent_config,
                         sampler={"gc_negative": False})
    save_checkpoint(checkpoint, HIQLAgent(agent_config, 2, 2), recipe, 1, np.random.default_rng(0))
    meta = export_bundle(checkpoint, tmp_path / "bundle", control_period_s=0.1)
    assert meta.value is None and "gc_negative is false" in caplog.text
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["bundle.json", "high.onnx", "low.onnx"]
    assert ValueRuntime.from_bundle(tmp_path / "bundle", ["CPUExecutionProvider"]) is None


def test_bad_checkpoint_is_one_line_error(tmp_path) -> None:
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as e:
        export_bundle(tmp_path / "bad.pt", tmp_path / "bundle")
    assert "\n" not in str(e.value) and not (tmp_path / "bundle").exists()


def test_export_of_ema_policies_with_the_new_flow_options(tmp_path) -> None:
    """policy_ema, a SiLU conditioning net of its own dims and couplings without LayerNorm or zero-init
    export and pass the parity check; the bundle acts with the EMA copies, not the trained weights."""
    agent_config = AgentConfig(subgoal_space="state", actor_hidden_dims=(16,), value_hidden_dims=(8,),
                               flow_hidden_dims=(16,), flow_encode_dim=8, flow_blocks=3, policy_ema=0.5,
                               flow_cond_hidden_dims=(24, 24), flow_cond_activation="silu", flow_layer_norm=False,
                               flow_zero_init=False)
    torch.manual_seed(0)
    agent = HIQLAgent(agent_config, 2, 2)
    with torch.no_grad():  # the trained weights move on, the EMA copies stay behind
        for p in [*agent.high_actor.parameters(), *agent.low_actor.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    checkpoint = tmp_path / "ema.pt"
    recipe = TrainConfig(run_dir="unused", dataset=DatasetConfig(path="unused.npz"), agent=agent_config)
    save_checkpoint(checkpoint, agent, recipe, 7, np.random.default_rng(0))
    parity = export_bundle(checkpoint, tmp_path / "bundle", control_period_s=0.1).parity
    for name, diff in parity.max_abs_diff.items():  # within the check, and a bug's 1e-3 of the magnitude is not
        tolerance = parity.atol + parity.rtol * parity.output_magnitude[name] + 2 * parity.torch_float32_error[name]
        assert diff <= tolerance < 1e-3 * parity.output_magnitude[name], name

    runtime = PolicyRuntime(tmp_path / "bundle", ["CPUExecutionProvider"])
    obs, goals, z = (torch.randn(5, 2) for _ in range(3))
    subgoal, _ = agent.plan(obs, goals, z)
    action, _ = agent.act(obs, subgoal, z)
    # the random-init couplings reach |x| ~ 100: float32 agreement is relative there
    np.testing.assert_allclose(runtime.plan(obs.numpy(), goals.numpy(), z.numpy()).subgoal, subgoal, 1e-5, 1e-5)
    np.testing.assert_allclose(runtime.act(obs.numpy(), subgoal.numpy(), z.numpy()).action, action, 1e-5, 1e-5)
    trained, _ = agent.high_actor.sample_with_log_prob(torch.cat([obs, goals], -1), z)
    assert not torch.allclose(subgoal, trained, atol=1e-3)
