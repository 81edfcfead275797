"""`nfhiql bench inference`: batch-1 latency of `plan` and `act`, ONNX Runtime vs torch eager.

Both sides are timed numpy in → numpy out, as a controller would call them: the runtime's
`plan`/`act` (input checks, finiteness check and clipping included) against the torch modules the
bundle was exported from (rebuilt from the bundle's source checkpoint, verified by checksum).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from nfhiql_core.algo.agent import HIQLAgent
from nfhiql_core.deploy.bundle import Bundle, BundleError
from nfhiql_core.checksums import sha256_file
from nfhiql_core.training.checkpoint import load_checkpoint
from nfhiql_core.training.export import level_modules
from nfhiql_core.deploy.runtime import PolicyRuntime

ACT_P99_TARGET_US = 300.0  # low-level `act` on CPU


def latencies_us(call: Callable[[], Any], calls: int, warmup: int) -> np.ndarray:
    """Wall-clock latency of each of `calls` calls (after `warmup` untimed ones), in microseconds."""
    for _ in range(warmup):
        call()
    out = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter_ns()
        call()
        out[i] = time.perf_counter_ns() - start
    return out / 1e3


def source_agent(bundle: Bundle, checkpoint: str | None = None) -> HIQLAgent:
    """The torch agent a bundle was exported from; BundleError if the checkpoint is not that one."""
    path = Path(checkpoint or bundle.metadata.source_checkpoint.path)
    if not path.is_file():
        raise BundleError(f"{bundle.path}: source checkpoint {path} not found (pass --checkpoint)")
    if sha256_file(path) != bundle.metadata.source_checkpoint.sha256:
        raise BundleError(f"{path}: not the checkpoint {bundle.path} was exported from (checksum differs)")
    return load_checkpoint(path).build_agent("cpu").eval()


def _torch_call(module: nn.Module, observation: np.ndarray, condition: np.ndarray, z_dim: int) -> Callable[[], Any]:
    z = torch.zeros(1, z_dim)

    def call() -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            out, log_prob = module(torch.from_numpy(observation[None]), torch.from_numpy(condition[None]), z)
        return out.numpy()[0], log_prob.numpy()[0]

    return call


def bench_inference(bundle_dir: str, calls: int = 10_000, warmup: int = 500, checkpoint: str | None = None,
                    providers: Sequence[Any] = ("CPUExecutionProvider",), threads: int = 1,
                    seed: int = 0) -> list[dict[str, Any]]:
    """Print and return p50/p99/max latency (µs) of plan and act at batch 1, ORT vs torch eager."""
    runtime = PolicyRuntime(bundle_dir, providers, intra_op_threads=threads)
    torch.set_num_threads(threads)
    meta = runtime.metadata
    modules = level_modules(source_agent(runtime.bundle, checkpoint))
    rng = np.random.default_rng(seed)
    obs, goal = (rng.normal(size=meta.obs_dim).astype(np.float32) for _ in range(2))
    subgoal = runtime.plan(obs, goal).subgoal
    cases = {("plan", "onnxruntime"): lambda: runtime.plan(obs, goal),
             ("plan", "torch eager"): _torch_call(modules["high"], obs, goal, meta.subgoal_dim),
             ("act", "onnxruntime"): lambda: runtime.act(obs, subgoal),
             ("act", "torch eager"): _torch_call(modules["low"], obs, subgoal, meta.action_dim)}
    print(f"bundle {bundle_dir}: {meta.policy} policy, obs {meta.obs_dim}, subgoal {meta.subgoal_dim}, "
          f"action {meta.action_dim}; batch 1, {calls} calls after {warmup} warm-up")
    print(f"onnxruntime on {', '.join(runtime.providers)} ({threads} intra-op thread(s)); "
          f"torch {torch.__version__} eager ({torch.get_num_threads()} thread(s))")
    print(f"{'call':<5} {'runtime':<12} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>9}")
    rows = []
    for (call, backend), fn in cases.items():
        lat = latencies_us(fn, calls, warmup)
        row = {"call": call, "runtime": backend, "p50_us": float(np.percentile(lat, 50)),
               "p99_us": float(np.percentile(lat, 99)), "max_us": float(lat.max()), "calls": calls}
        rows.append(row)
        print(f"{call:<5} {backend:<12} {row['p50_us']:>8.1f} {row['p99_us']:>8.1f} {row['max_us']:>9.1f}")
    act_p99 = rows[2]["p99_us"]
    verdict = "met" if act_p99 <= ACT_P99_TARGET_US else "missed"
    print(f"target act p99 <= {ACT_P99_TARGET_US:.0f} µs (onnxruntime, CPU): {act_p99:.1f} µs, {verdict}")
    return rows
