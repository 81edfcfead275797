"""`nfhiql bench inference`: batch-1 latency of `plan` and `act` through ONNX Runtime, beside a bare
`InferenceSession.run` of the same model and, when its checkpoint is given, torch eager.

All are timed numpy in → numpy out, as a controller would call them, in turn (one call of each per
round). The runtime's `plan`/`act` include input checks, the finiteness check and clipping; the bare
session is the floor those cost over. The ONNX Runtime figures need neither torch nor the checkpoint;
the torch rows are rebuilt from `--checkpoint`, verified against the bundle's recorded sha256.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nfhiql_core.bench.timing import interleaved_latencies_us
from nfhiql_core.checksums import sha256_file
from nfhiql_core.deploy.bundle import Bundle, BundleError
from nfhiql_core.deploy.runtime import PolicyRuntime

P99_TARGET_US = 200.0  # batch-1 `plan` and `act` on CPU


def _torch_cases(bundle: Bundle, checkpoint: str, threads: int, inputs: dict[str, tuple[np.ndarray, np.ndarray]]
                 ) -> dict[tuple[str, str], Callable[[], Any]]:
    """torch eager calls of the modules the bundle was exported from; BundleError for another checkpoint."""
    import torch  # the training extra: only for the optional torch rows

    from nfhiql_core.training.checkpoint import load_checkpoint
    from nfhiql_core.training.export import level_modules

    path = Path(checkpoint)
    if not path.is_file():
        raise BundleError(f"{path}: checkpoint not found")
    if sha256_file(path) != bundle.metadata.source_checkpoint.sha256:
        raise BundleError(f"{path}: not the checkpoint {bundle.path} was exported from (checksum differs)")
    torch.set_num_threads(threads)
    modules = level_modules(load_checkpoint(path).build_agent("cpu").eval())

    def call_of(level: str) -> Callable[[], Any]:
        observation, condition = (torch.from_numpy(x[None]) for x in inputs[level])
        z = torch.zeros(1, bundle.metadata.noise_dim(level))

        def call() -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode():
                out, log_prob = modules[level](observation, condition, z)
            return out.numpy()[0], log_prob.numpy()[0]
        return call

    return {("plan", f"torch {torch.__version__} eager"): call_of("high"),
            ("act", f"torch {torch.__version__} eager"): call_of("low")}


def _bare_call(runtime: PolicyRuntime, level: str, observation: np.ndarray, condition: np.ndarray
               ) -> Callable[[], Any]:
    session = runtime.levels[level].session
    feed = dict(zip(runtime.levels[level].input_names,
                    (observation[None], condition[None], np.zeros((1, runtime.metadata.noise_dim(level)), np.float32))))
    return lambda: session.run(None, feed)


def bench_inference(bundle_dir: str, calls: int = 10_000, warmup: int = 500, checkpoint: str | None = None,
                    providers: Sequence[Any] = ("CPUExecutionProvider",), threads: int = 1,
                    seed: int = 0) -> list[dict[str, Any]]:
    """Print and return p50/p99/max latency (µs) of plan and act at batch 1."""
    runtime = PolicyRuntime(bundle_dir, providers, intra_op_threads=threads)
    meta = runtime.metadata
    rng = np.random.default_rng(seed)
    obs, goal = (rng.normal(size=meta.obs_dim).astype(np.float32) for _ in range(2))
    subgoal = runtime.plan(obs, goal).subgoal.astype(np.float32)
    cases = {("plan", "runtime.plan"): lambda: runtime.plan(obs, goal),
             ("plan", "session.run"): _bare_call(runtime, "high", obs, goal),
             ("act", "runtime.act"): lambda: runtime.act(obs, subgoal),
             ("act", "session.run"): _bare_call(runtime, "low", obs, subgoal)}
    if checkpoint is not None:
        cases.update(_torch_cases(runtime.bundle, checkpoint, threads, {"high": (obs, goal), "low": (obs, subgoal)}))
    print(f"bundle {bundle_dir}: {meta.policy} policy, obs {meta.obs_dim}, subgoal {meta.subgoal_dim}, "
          f"action {meta.action_dim}; batch 1, {calls} calls after {warmup} warm-up")
    print(f"onnxruntime on {', '.join(runtime.providers)} ({threads} intra-op thread(s))"
          + ("" if checkpoint else "; torch rows: pass --checkpoint (the bundle's source checkpoint)"))
    print(f"{'call':<5} {'runtime':<20} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>9}")
    rows = []
    latencies = interleaved_latencies_us(cases, calls, warmup)
    for (call, backend), lat in sorted(latencies.items(), key=lambda item: item[0][0] != "plan"):
        row = {"call": call, "runtime": backend, "p50_us": float(np.percentile(lat, 50)),
               "p99_us": float(np.percentile(lat, 99)), "max_us": float(lat.max()), "calls": calls}
        rows.append(row)
        print(f"{call:<5} {backend:<20} {row['p50_us']:>8.1f} {row['p99_us']:>8.1f} {row['max_us']:>9.1f}")
    p99 = {r["call"]: r["p99_us"] for r in rows if r["runtime"] == f"runtime.{r['call']}"}
    verdict = "met" if max(p99.values()) <= P99_TARGET_US else "missed"
    print(f"target p99 <= {P99_TARGET_US:.0f} µs (runtime.plan / runtime.act, CPU): {p99['plan']:.1f} / "
          f"{p99['act']:.1f} µs, {verdict}")
    return rows
